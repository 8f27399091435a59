import NIOCore
import Synchronization

/// Where a server finds the key of a PSK identity (the devices' store).
public protocol PSKKeySource: Sendable {
    /// The key of `identity`; nil when no device has it, or it was revoked.
    func key(forIdentity identity: String) async throws -> [UInt8]?
}

/// Keys by PSK identity, as a handshake needs them: OpenSSL asks for a key synchronously in the
/// middle of the handshake, so the handler looks the identity up before it hands OpenSSL the
/// datagram that names it, and keeps what it found here for a while. A revoked key stops
/// working for new handshakes within `lifetime`. Bounded: at `capacity` the oldest entries go.
public final class PSKKeyCache: Sendable {
    public enum Lookup: Sendable, Equatable {
        case known([UInt8])
        case unknown
    }

    public let source: any PSKKeySource
    public let capacity: Int
    public let lifetime: Duration
    /// How long an unknown identity is remembered (a device provisioned just now is found soon).
    public let unknownLifetime: Duration

    private struct Entry {
        var lookup: Lookup
        var expires: ContinuousClock.Instant
    }

    private struct State {
        var entries: [String: Entry] = [:]
        /// Insertion order, for eviction at the bound (may hold identities already replaced).
        var order: [String] = []
        var orderStart = 0
    }

    private let state = Mutex(State())

    public init(source: any PSKKeySource, capacity: Int = 100_000, lifetime: Duration = .seconds(60), unknownLifetime: Duration = .seconds(2)) {
        self.source = source
        self.capacity = max(1, capacity)
        self.lifetime = lifetime
        self.unknownLifetime = unknownLifetime
    }

    /// What is known of `identity` and still fresh; nil when it must be looked up.
    public func cached(_ identity: String) -> Lookup? {
        let now = ContinuousClock.now
        return state.withLock { state in
            guard let entry = state.entries[identity], entry.expires > now else { return nil }
            return entry.lookup
        }
    }

    /// Looks `identity` up in the source and remembers the answer; a source that fails counts
    /// as unknown for now (the handshake fails and the device tries again).
    public func lookUp(_ identity: String) async -> Lookup {
        let key = try? await source.key(forIdentity: identity)
        let lookup: Lookup = key.map { .known($0) } ?? .unknown
        let expires = ContinuousClock.now + (key == nil ? unknownLifetime : lifetime)
        state.withLock { state in
            if state.entries.updateValue(Entry(lookup: lookup, expires: expires), forKey: identity) == nil {
                state.order.append(identity)
            }
            while state.entries.count > capacity, state.orderStart < state.order.count {
                state.entries.removeValue(forKey: state.order[state.orderStart])
                state.orderStart += 1
            }
            if state.orderStart > 1024, state.orderStart * 2 > state.order.count {
                state.order.removeFirst(state.orderStart)
                state.orderStart = 0
            }
            // Forgotten identities leave their place in `order`; rebuilt before it doubles.
            if state.order.count - state.orderStart > 2 * capacity {
                state.order = Array(state.entries.keys)
                state.orderStart = 0
            }
        }
        return lookup
    }

    /// Forgets `identity` (its key was revoked or replaced here).
    public func forget(_ identity: String) {
        state.withLock { _ = $0.entries.removeValue(forKey: identity) }
    }

    public var count: Int { state.withLock { $0.entries.count } }
}
