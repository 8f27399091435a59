import CourierActors
import NIOConcurrencyHelpers
import NIOCore

/// Every push session's timers, looked at by one sweep every `interval` rather than by a
/// sleeping task per session: at 1,000 sessions those tasks were 5,000 timer wake-ups a second
/// and most of an idle server's CPU. Holds one check per open session, so it is bounded by the
/// sessions the service admits (`maxSessions`).
final class SessionWatchdog: Sendable {
    /// What a session's check found.
    enum Verdict: Sendable {
        case fine
        /// The device's acknowledgement timeout is due to be looked at.
        case checkResends(DeviceEntity)
        /// The session is over: it is watched no more.
        case ended
        /// Over, and its connection goes now: its writer is stuck behind a full socket and
        /// cannot send the close frame.
        case endedClosingChannel(any Channel)
    }

    /// One session's check at `now`; `resendsDue` about once a second.
    typealias Check = @Sendable (_ now: ContinuousClock.Instant, _ resendsDue: Bool) -> Verdict

    let interval: Duration
    /// Every this many sweeps, the devices' acknowledgement timeouts are looked at too.
    let resendEvery: Int
    private let sessions = NIOLockedValueBox<(next: Int, checks: [Int: Check])>((0, [:]))

    init(interval: Duration = .milliseconds(500), resendEvery: Int = 2) {
        self.interval = interval
        self.resendEvery = resendEvery
    }

    /// Starts checking a session; the id ends it (`unwatch`).
    func watch(_ check: @escaping Check) -> Int {
        sessions.withLockedValue { sessions in
            sessions.next += 1
            sessions.checks[sessions.next] = check
            return sessions.next
        }
    }

    func unwatch(_ id: Int) {
        sessions.withLockedValue { _ = $0.checks.removeValue(forKey: id) }
    }

    /// Sessions being watched.
    var count: Int { sessions.withLockedValue { $0.checks.count } }

    /// Sweeps every `interval` on `loop`, as the loop's own repeated task, until the calling
    /// task is cancelled. A `Task.sleep` per sweep would wake dispatch's timer thread and a
    /// dispatch worker before the loop, three wake-ups instead of one. The loop must outlive
    /// the call (the server's are the singleton group's): a loop shut down would never answer
    /// the cancellation. A sweep of every session blocks the loop's I/O while it runs, about a
    /// millisecond or two per thousand sessions here (it ran on the loops before too, as a task).
    func run(on loop: any EventLoop) async {
        // Only the loop touches the count: a box bound to it, no lock.
        let sweeps = NIOLoopBoundBox.makeBoxSendingValue(0, eventLoop: loop)
        let repeated = loop.scheduleRepeatedTask(initialDelay: TimeAmount(interval), delay: TimeAmount(interval)) { [self] _ in
            sweeps.value += 1
            sweep(now: .now, resendsDue: sweeps.value % resendEvery == 0)
        }
        let stopped = loop.makePromise(of: Void.self)
        await withTaskCancellationHandler {
            try? await stopped.futureResult.get()
        } onCancel: {
            repeated.cancel(promise: stopped)
        }
    }

    /// Checks every session once; the sessions found over are dropped, and the devices due a
    /// look at their acknowledgement timeout get it.
    func sweep(now: ContinuousClock.Instant, resendsDue: Bool) {
        let checks = sessions.withLockedValue { $0.checks }
        var ended: [Int] = []
        var devices: [DeviceEntity] = []
        for (id, check) in checks {
            switch check(now, resendsDue) {
            case .fine:
                break
            case .checkResends(let device):
                devices.append(device)
            case .ended:
                ended.append(id)
            case .endedClosingChannel(let channel):
                ended.append(id)
                channel.close(promise: nil)
            }
        }
        if !ended.isEmpty {
            sessions.withLockedValue { sessions in
                for id in ended { sessions.checks[id] = nil }
            }
        }
        for device in devices { device.resendUnacknowledged() }
    }
}
