import NIOCore
import Synchronization

/// Push connections that have not shown a valid token yet: from the TCP accept, through the
/// HTTP upgrade, until their Hello is authenticated. They have a bound of their own, much
/// smaller than the sessions', so connections that never authenticate cannot fill the places
/// meant for devices: at the bound, the oldest stranger is closed to make room (a device says
/// Hello within milliseconds of connecting, so it is rarely the oldest), and every stranger is
/// closed at the hello deadline.
final class Strangers: Sendable {
    private struct State {
        /// By admission number: the smallest is the oldest.
        var waiting: [UInt64: any Channel] = [:]
        var next: UInt64 = 0
    }

    let bound: Int
    private let state = Mutex(State())

    init(bound: Int) {
        self.bound = bound
    }

    /// Strangers now (a gauge).
    var count: Int { state.withLock { $0.waiting.count } }

    /// Counts `channel` as a stranger; returns its ticket and the oldest stranger, if the bound
    /// made room by evicting it (the caller closes that one).
    func admit(_ channel: any Channel) -> (ticket: UInt64, evicted: (any Channel)?) {
        state.withLock { state in
            var evicted: (any Channel)?
            if state.waiting.count >= bound, let oldest = state.waiting.keys.min() {
                evicted = state.waiting.removeValue(forKey: oldest)
            }
            state.next += 1
            state.waiting[state.next] = channel
            return (state.next, evicted)
        }
    }

    /// The connection authenticated, or closed: no longer a stranger. Returns whether it was one.
    @discardableResult
    func leave(_ ticket: UInt64) -> Bool {
        state.withLock { $0.waiting.removeValue(forKey: ticket) != nil }
    }

    /// Whether the ticket's connection is still a stranger.
    func contains(_ ticket: UInt64) -> Bool {
        state.withLock { $0.waiting[ticket] != nil }
    }
}
