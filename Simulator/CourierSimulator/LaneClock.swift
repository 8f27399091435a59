import HeapModule
import NIOCore
import Synchronization

/// The sleeps of the send lanes whose devices' sockets are on one event loop, kept in a heap of
/// their own with one loop timer armed for the earliest. A lane then runs on its socket's loop
/// and sends with no thread hand-off: on Swift's pool each message was a wake-up by Dispatch's
/// timer thread, a hop to the loop and a hop back. And a fleet's tens of thousands of lanes are
/// not tens of thousands of NIO timers: NIO's timer heap moves a closure and a promise per
/// entry, and with a timer per lane in it `scripts/bench-fleet 15000` had a p99 of 0.84-1.04 s.
///
/// Bounded by the lanes that sleep on it: each sleeps once at a time, and a cancelled sleep
/// leaves one entry until its deadline.
final class LaneClock: Sendable {
    let eventLoop: any EventLoop

    private struct Wake: Comparable {
        var deadline: ContinuousClock.Instant
        var id: UInt64
        static func < (left: Wake, right: Wake) -> Bool { (left.deadline, left.id) < (right.deadline, right.id) }
    }

    private struct State {
        var wakes = Heap<Wake>()
        var sleepers: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        /// The earliest loop timer armed (nil: none is).
        var armedFor: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    private let nextID = Atomic<UInt64>(0)
    /// A timer wakes the sleepers due within this much after it too: at bench-mqtt's 6,000
    /// sends a second, a timer per send was about 7% of the simulator's CPU (NIO's
    /// `scheduleTask`, a promise and a closure each), and with the slack one timer serves the
    /// several sends due in the next millisecond. A lane sends up to this much early (and, on
    /// a busy loop, late, as any timer), and times its send from when it was sent.
    static let earlySlack: Duration = .milliseconds(1)

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Returns at `deadline` (up to `earlySlack` before, or a little after: the loop's timer),
    /// on the loop when the task prefers it; throws `CancellationError` once the task is
    /// cancelled.
    func sleep(until deadline: ContinuousClock.Instant) async throws {
        let id = nextID.add(1, ordering: .relaxed).newValue
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let arm: Bool = state.withLock { state in
                    // Cancelled before this ran: its handler found nothing to resume.
                    if Task.isCancelled {
                        continuation.resume(throwing: CancellationError())
                        return false
                    }
                    state.sleepers[id] = continuation
                    state.wakes.insert(Wake(deadline: deadline, id: id))
                    guard state.armedFor.map({ deadline < $0 }) ?? true else { return false }
                    state.armedFor = deadline
                    return true
                }
                if arm { armTimer(for: deadline) }
            }
        } onCancel: {
            state.withLock { $0.sleepers.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    private func armTimer(for deadline: ContinuousClock.Instant) {
        eventLoop.scheduleTask(in: TimeAmount(max(.zero, deadline - .now))) { [self] in wakeDue(firedFor: deadline) }
    }

    /// Wakes every sleeper whose deadline has passed or comes within `earlySlack`, and arms
    /// the timer for the next, unless an earlier timer is still armed for it. (NIO's clock and
    /// this one may round apart, so a timer can fire a hair before its deadline: then it is
    /// armed again for it.)
    private func wakeDue(firedFor fired: ContinuousClock.Instant) {
        let now = ContinuousClock.now
        let (due, next): ([CheckedContinuation<Void, any Error>], ContinuousClock.Instant?) = state.withLock { state in
            var due: [CheckedContinuation<Void, any Error>] = []
            while let first = state.wakes.min, first.deadline <= now + Self.earlySlack {
                state.wakes.removeMin()
                if let sleeper = state.sleepers.removeValue(forKey: first.id) { due.append(sleeper) }
            }
            if let armed = state.armedFor, armed <= max(now, fired) { state.armedFor = nil }
            guard let next = state.wakes.min?.deadline, state.armedFor.map({ next < $0 }) ?? true else { return (due, nil) }
            state.armedFor = next
            return (due, next)
        }
        for sleeper in due { sleeper.resume() }
        if let next { armTimer(for: next) }
    }
}

/// One `LaneClock` per event loop, made when a lane first needs it (a group has a fixed set of
/// loops, so this holds at most that many).
final class LaneClocks: Sendable {
    private let clocks = Mutex<[ObjectIdentifier: LaneClock]>([:])

    func clock(for eventLoop: any EventLoop) -> LaneClock {
        clocks.withLock { clocks in
            let key = ObjectIdentifier(eventLoop)
            if let clock = clocks[key] { return clock }
            let clock = LaneClock(eventLoop: eventLoop)
            clocks[key] = clock
            return clock
        }
    }
}
