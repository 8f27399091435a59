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
/// working for new handshakes within `lifetime`. Bounded like the server's token cache: at
/// `capacity` entries it is emptied and refills from the source.
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

    private let entries = Mutex<[String: Entry]>([:])

    public init(source: any PSKKeySource, capacity: Int = 100_000, lifetime: Duration = .seconds(60), unknownLifetime: Duration = .seconds(2)) {
        self.source = source
        self.capacity = max(1, capacity)
        self.lifetime = lifetime
        self.unknownLifetime = unknownLifetime
    }

    /// What is known of `identity` and still fresh; nil when it must be looked up.
    public func cached(_ identity: String) -> Lookup? {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[identity], entry.expires > now else { return nil }
            return entry.lookup
        }
    }

    /// Looks `identity` up in the source and remembers the answer; a source that fails counts
    /// as unknown for now (the handshake fails and the device tries again).
    public func lookUp(_ identity: String) async -> Lookup {
        let key = try? await source.key(forIdentity: identity)
        let lookup: Lookup = key.map { .known($0) } ?? .unknown
        let expires = ContinuousClock.now + (key == nil ? unknownLifetime : lifetime)
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[identity] = Entry(lookup: lookup, expires: expires)
        }
        return lookup
    }

    public var count: Int { entries.withLock { $0.count } }
}
