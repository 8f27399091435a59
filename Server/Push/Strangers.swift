import NIOCore
import Synchronization

/// Push connections that have not shown a valid token yet: from the TCP accept, through the
/// HTTP upgrade, until their Hello is authenticated. They have a bound of their own, much
/// smaller than the sessions', so connections that never authenticate cannot fill the places
/// meant for devices: at the bound, the oldest stranger is closed to make room, and every
/// stranger is closed at the hello deadline.
///
/// A stranger whose Hello has arrived is not evicted while it is checked: under a flood of
/// accepts the token check of a real device (and the task that runs it) can take longer than
/// the flood takes to make it the oldest. Those have a smaller bound of their own
/// (`checkingBound`); past it a Hello is checked as a plain stranger, evictable like the others.
final class Strangers: Sendable {
    private struct State {
        /// By admission number: the smallest is the oldest.
        var waiting: [UInt64: any Channel] = [:]
        /// Strangers whose Hello is being checked: never evicted for room.
        var checking: Set<UInt64> = []
        var next: UInt64 = 0
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

    /// Counts `channel` as a stranger; returns its ticket and the oldest stranger not being
    /// checked, if the bound made room by evicting it (the caller closes that one).
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

    /// The stranger's Hello is being checked: it is no longer evicted for room, unless
    /// `checkingBound` Hellos are being checked already.
    func startChecking(_ ticket: UInt64) {
        state.withLock { state in
            guard state.checking.count < checkingBound, state.waiting.removeValue(forKey: ticket) != nil else { return }
            state.checking.insert(ticket)
        }
    }

    /// The connection authenticated, or closed: no longer a stranger. Returns whether it was one.
    @discardableResult
    func leave(_ ticket: UInt64) -> Bool {
        state.withLock { state in
            state.waiting.removeValue(forKey: ticket) != nil || state.checking.remove(ticket) != nil
        }
    }
}
