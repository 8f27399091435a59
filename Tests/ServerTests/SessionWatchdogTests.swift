@testable import CourierPush
import NIOPosix
import XCTest

/// The one sweep that stands in for a timer per push session.
final class SessionWatchdogTests: XCTestCase {
    func testASweepChecksEverySessionOnceAndForgetsTheOnesThatEnded() {
        let watchdog = SessionWatchdog()
        let seen = Seen()
        let ending = watchdog.watch { _, resendsDue in
            seen.add("ending", resendsDue)
            return .ended
        }
        let staying = watchdog.watch { _, resendsDue in
            seen.add("staying", resendsDue)
            return .fine
        }
        XCTAssertNotEqual(ending, staying)
        XCTAssertEqual(watchdog.count, 2)

        watchdog.sweep(now: .now, resendsDue: false)
        XCTAssertEqual(seen.calls.sorted(by: { $0.0 < $1.0 }).map(\.0), ["ending", "staying"])
        XCTAssertEqual(watchdog.count, 1, "an ended session is watched no more")

        watchdog.sweep(now: .now, resendsDue: true)
        XCTAssertEqual(seen.calls.count, 3)
        XCTAssertEqual(seen.calls.last?.0, "staying")
        XCTAssertEqual(seen.calls.last?.1, true, "the resend flag reaches the check")

        watchdog.unwatch(staying)
        XCTAssertEqual(watchdog.count, 0)
        watchdog.sweep(now: .now, resendsDue: false)
        XCTAssertEqual(seen.calls.count, 3, "an unwatched session is not checked")
    }

    func testRunSweepsEveryIntervalUntilCancelled() async throws {
        let watchdog = SessionWatchdog(interval: .milliseconds(20), resendEvery: 3)
        let seen = Seen()
        _ = watchdog.watch { _, resendsDue in
            seen.add("session", resendsDue)
            return .fine
        }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let running = Task { await watchdog.run(on: loop) }
        try await Task.sleep(for: .milliseconds(500))
        running.cancel()
        await running.value
        let calls = seen.calls
        XCTAssertGreaterThanOrEqual(calls.count, 6, "about 25 sweeps in 500 ms; far fewer on a busy machine, but several")
        XCTAssertEqual(calls.prefix(6).map(\.1), [false, false, true, false, false, true], "every third sweep looks at resends")
        let after = seen.calls.count
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertEqual(seen.calls.count, after, "no sweep after cancellation")
    }
}

private final class Seen: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var recorded: [(String, Bool)] = []
    func add(_ name: String, _ resendsDue: Bool) { lock.withLock { recorded.append((name, resendsDue)) } }
    var calls: [(String, Bool)] { lock.withLock { recorded } }
}
