import CoAP
@testable import CourierSimulator
import NIOCore
import NIOPosix
import XCTest

/// The send lanes' sleeps on one event loop's timer: each sleeper wakes at its deadline (never
/// more than the clock's slack before), soonest first, on the loop, and a cancelled one at once.
final class LaneClockTests: XCTestCase {
    func testSleepersWakeAtTheirDeadlinesSoonestFirstOnTheLoop() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let clock = LaneClock(eventLoop: loop)
        let start = ContinuousClock.now
        // Later deadlines arm first, so each sooner one has to take the timer over.
        let delays = [900, 700, 500, 100, 300, 300, 800]
        let woke = await withTaskExecutorPreference(EventLoopTaskExecutor(loop)) { () async -> [(delay: Int, at: ContinuousClock.Instant, onLoop: Bool)] in
            await withTaskGroup(of: (Int, ContinuousClock.Instant, Bool).self) { group in
                for delay in delays {
                    group.addTask {
                        try? await clock.sleep(until: start + .milliseconds(delay))
                        return (delay, ContinuousClock.now, loop.inEventLoop)
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
        }
        XCTAssertEqual(woke.map(\.delay), delays.sorted(), "woken soonest first")
        for sleeper in woke {
            XCTAssertGreaterThanOrEqual(sleeper.at, start + .milliseconds(sleeper.delay) - LaneClock.earlySlack, "not before its deadline less the slack (\(sleeper.delay) ms)")
            XCTAssertTrue(sleeper.onLoop, "resumed on the loop")
        }
        XCTAssertLessThan(woke.last!.at - start, .seconds(5), "and not held up (a generous bound for a busy machine)")
    }

    func testACancelledSleepEndsAtOnceAndTheOthersStillWake() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let clock = LaneClock(eventLoop: loop)
        let start = ContinuousClock.now
        let long = Task { () -> Bool in
            do {
                try await clock.sleep(until: start + .seconds(60))
                return false
            } catch {
                return error is CancellationError
            }
        }
        let short = Task { try await clock.sleep(until: start + .milliseconds(200)) }
        try await Task.sleep(for: .milliseconds(50))
        long.cancel()
        let cancelled = await long.value
        XCTAssertTrue(cancelled, "a cancelled sleep throws CancellationError")
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(30), "at once, not at its deadline")
        try await short.value
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - start, .milliseconds(200) - LaneClock.earlySlack)

        // A task cancelled before it sleeps does not sleep at all.
        let already = Task { () -> Bool in
            withUnsafeCurrentTask { $0?.cancel() }
            do {
                try await clock.sleep(until: .now + .seconds(60))
                return false
            } catch {
                return true
            }
        }
        let threw = await already.value
        XCTAssertTrue(threw)
    }
}
