import CourierCore
import Foundation
import Synchronization
import XCTest

final class DedicatedThreadExecutorTests: XCTestCase {
    private static func threadsNamed(_ name: String) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter { task in
            ((try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines) == name
        }.count
    }

    func testWorkThatPrefersItRunsOnItsThreadAndTheThreadEndsWithIt() async throws {
        let name = "courier-ex-\(Int.random(in: 1000...9999))" // 15 bytes: Linux keeps no more
        var executor: DedicatedThreadExecutor? = DedicatedThreadExecutor(name: name)
        XCTAssertNotEqual(currentThreadName(), name)
        let ran = await withTaskExecutorPreference(executor) { () async -> [String] in
            // Child tasks inherit the preference: every one runs on the one thread.
            await withTaskGroup(of: String.self) { group in
                for _ in 0..<8 { group.addTask { currentThreadName() } }
                return await group.reduce(into: []) { $0.append($1) }
            } + [currentThreadName()]
        }
        XCTAssertEqual(ran, Array(repeating: name, count: 9))
        XCTAssertEqual(Self.threadsNamed(name), 1)

        executor = nil
        let deadline = Date().addingTimeInterval(5)
        while Self.threadsNamed(name) > 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(Self.threadsNamed(name), 0, "the thread ends once its executor is gone")
    }

    /// Sleepers on the thread wake at their deadlines, soonest first, on the thread, while other
    /// work keeps running there meanwhile.
    func testASleepOnItsThreadEndsAtItsDeadlineInOrderAndOtherWorkRunsMeanwhile() async throws {
        let name = "courier-sl-\(Int.random(in: 1000...9999))"
        let executor = DedicatedThreadExecutor(name: name)
        let start = ContinuousClock.now
        let woke = await withTaskExecutorPreference(executor) { () async -> [(delay: Int, after: Duration, thread: String)] in
            await withTaskGroup(of: (Int, Duration, String)?.self) { group in
                for delay in [600, 200, 400] {
                    group.addTask {
                        try? await executor.sleep(until: start + .milliseconds(delay))
                        return (delay, ContinuousClock.now - start, currentThreadName())
                    }
                }
                // Work on the same thread goes on while they sleep.
                group.addTask {
                    var rounds = 0
                    let began = ContinuousClock.now
                    while ContinuousClock.now - began < .milliseconds(100) {
                        rounds += 1
                        await Task.yield()
                    }
                    XCTAssertGreaterThan(rounds, 1, "the thread runs other work while tasks sleep on it")
                    return nil
                }
                return await group.reduce(into: []) { if let woke = $1 { $0.append(woke) } }
            }
        }
        XCTAssertEqual(woke.map(\.delay), [200, 400, 600], "soonest first")
        for sleeper in woke {
            XCTAssertGreaterThanOrEqual(sleeper.after, .milliseconds(sleeper.delay), "no sooner than its deadline")
            XCTAssertEqual(sleeper.thread, name)
        }
        // A deadline already past does not wait.
        let before = ContinuousClock.now
        await withTaskExecutorPreference(executor) { try? await executor.sleep(until: before - .seconds(1)) }
        XCTAssertLessThan(ContinuousClock.now - before, .seconds(5))
    }

    /// A sleeper that comes while the thread waits for a later one wakes at its own deadline,
    /// before the later one.
    func testASoonerSleeperThatComesDuringAWaitWakesFirst() async throws {
        let executor = DedicatedThreadExecutor(name: "courier-sl2-\(Int.random(in: 100...999))")
        let order = Mutex<[String]>([])
        async let late: Void = withTaskExecutorPreference(executor) {
            try? await executor.sleep(until: .now + .seconds(3))
            order.withLock { $0.append("late") }
        }
        // Long enough for the thread to be in its timed wait for the late one.
        try await Task.sleep(for: .milliseconds(300))
        let start = ContinuousClock.now
        await withTaskExecutorPreference(executor) { try? await executor.sleep(until: start + .milliseconds(200)) }
        order.withLock { $0.append("soon") }
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - start, .milliseconds(200))
        await late
        XCTAssertEqual(order.withLock { $0 }, ["soon", "late"])
    }

    /// A cancelled sleeper throws at once, long before its deadline, and the thread goes on
    /// keeping the others; a task cancelled before it sleeps does not sleep at all.
    func testACancelledSleeperThrowsAtOnceAndTheOthersStillWake() async throws {
        let executor = DedicatedThreadExecutor(name: "courier-sl3-\(Int.random(in: 100...999))")
        let start = ContinuousClock.now
        let cancelled = Task(executorPreference: executor) { () async -> Bool in
            (try? await executor.sleep(until: .now + .seconds(60))) == nil
        }
        let other = Task(executorPreference: executor) { () async throws -> Duration in
            try await executor.sleep(until: start + .milliseconds(400))
            return ContinuousClock.now - start
        }
        try await Task.sleep(for: .milliseconds(100))
        cancelled.cancel()
        let cancelledThrew = await cancelled.value
        XCTAssertTrue(cancelledThrew, "a cancelled sleep throws")
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(10), "at once, not at its deadline")
        let otherSlept = try await other.value
        XCTAssertGreaterThanOrEqual(otherSlept, .milliseconds(400), "the other sleeper still waits for its deadline")

        let early = Task(executorPreference: executor) { () async -> Bool in
            withUnsafeCurrentTask { $0?.cancel() }
            return (try? await executor.sleep(until: .now + .seconds(60))) == nil
        }
        let threw = await early.value
        XCTAssertTrue(threw, "a task already cancelled throws without sleeping")
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(10))
    }
}
