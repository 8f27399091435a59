import NIOCore
import Synchronization

/// Push connections that have not shown a valid token yet: from the TCP accept, through the
/// HTTP upgrade, until their Hello is authenticated. They have a bound of their own, much
/// smaller than the sessions', so connections that never authenticate cannot fill the places
/// meant for devices. At the bound one stranger is closed to make room: the oldest of the
/// source holding the most, so a flood from one source evicts its own connections and not a
/// device connecting from elsewhere (with evenly spread sources it is the oldest of all).
/// Every stranger is closed at the hello deadline.
///
/// A stranger whose Hello has arrived is not evicted while it is checked: under a flood of
/// accepts the token check of a real device (and the task that runs it) can take longer than
/// the flood takes to make it the oldest. Those have a smaller bound of their own
/// (`checkingBound`); past it a Hello is checked as a plain stranger, evictable like the others.
final class Strangers: Sendable {
    /// Where a connection comes from, for fairness at the bound: an IPv4 address, or an IPv6
    /// /64 (one subscriber's prefix, within which a new address costs nothing).
    enum Source: Hashable {
        case v4(UInt32)
        case v6(UInt64)
        case unknown

        init(_ address: SocketAddress?) {
            switch address {
            case .v4(let ipv4):
                self = .v4(ipv4.address.sin_addr.s_addr)
            case .v6(let ipv6):
                self = withUnsafeBytes(of: ipv6.address.sin6_addr) { bytes in
                    // A listener on "::" sees IPv4 peers as ::ffff:a.b.c.d; they are IPv4 sources.
                    if bytes.prefix(10).allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
                        return .v4(bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                    }
                    return .v6(bytes.loadUnaligned(as: UInt64.self))
                }
            case .unixDomainSocket, nil:
                self = .unknown
            }
        }
    }

    private struct State {
        /// By admission number: the smallest is the oldest.
        var waiting: [UInt64: (channel: any Channel, source: Source)] = [:]
        /// How many of `waiting` each source holds (sources with none are removed).
        var waitingBySource: [Source: Int] = [:]
        /// Strangers whose Hello is being checked: never evicted for room.
        var checking: Set<UInt64> = []
        var next: UInt64 = 0

        mutating func removeWaiting(_ ticket: UInt64) -> (any Channel)? {
            guard let (channel, source) = waiting.removeValue(forKey: ticket) else { return nil }
            let left = waitingBySource[source, default: 1] - 1
            waitingBySource[source] = left == 0 ? nil : left
            return channel
        }

        /// The oldest stranger of the sources holding the most; O(strangers), at the bound only.
        func nextToEvict() -> UInt64? {
            guard let most = waitingBySource.values.max() else { return nil }
            return waiting.lazy.filter { waitingBySource[$0.value.source] == most }.map(\.key).min()
        }
    }

    let bound: Int
    let checkingBound: Int
    private let state = Mutex(State())

    init(bound: Int) {
        self.bound = bound
        self.checkingBound = max(1, bound / 4)
    }

    /// Strangers now (a gauge).
    var count: Int { state.withLock { $0.waiting.count + $0.checking.count } }

    /// Counts `channel`, connected from `source`, as a stranger; returns its ticket and the
    /// stranger evicted to make room at the bound, if any (the caller closes that one).
    func admit(_ channel: any Channel, from source: Source) -> (ticket: UInt64, evicted: (any Channel)?) {
        state.withLock { state in
            var evicted: (any Channel)?
            if state.waiting.count >= bound, let victim = state.nextToEvict() {
                evicted = state.removeWaiting(victim)
            }
            state.next += 1
            state.waiting[state.next] = (channel, source)
            state.waitingBySource[source, default: 0] += 1
            return (state.next, evicted)
        }
    }

    /// The stranger's Hello is being checked: it is no longer evicted for room, unless
    /// `checkingBound` Hellos are being checked already.
    func startChecking(_ ticket: UInt64) {
        state.withLock { state in
            guard state.checking.count < checkingBound, state.removeWaiting(ticket) != nil else { return }
            state.checking.insert(ticket)
        }
    }

    /// The connection authenticated, or closed: no longer a stranger. Returns whether it was one.
    @discardableResult
    func leave(_ ticket: UInt64) -> Bool {
        state.withLock { state in
            state.removeWaiting(ticket) != nil || state.checking.remove(ticket) != nil
        }
    }
}
