import Foundation
import Synchronization
import XCTest
@testable import CourierLog

final class EmbeddedLogTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-log-\(UUID().uuidString)").path
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testOneSenderStaysInOnePartitionInOrderAndRangesSpread() async throws {
        let log = try EmbeddedLog(directory: directory)
        defer { log.close() }
        XCTAssertEqual(log.partitionCount, 4)
        let sender: UInt64 = 4242
        let partition = log.partition(forUser: sender)
        XCTAssertEqual(log.partition(forUser: sender), partition, "deterministic")
        XCTAssertEqual(log.partition(forUser: 4224), log.partition(forUser: 4287), "one range of 64 users shares a partition")
        let used = Set((0..<UInt64(200)).map { log.partition(forUser: $0 * 64) })
        XCTAssertEqual(used.count, 4, "200 ranges spread over every partition")

        var offsets: [UInt64] = []
        for index in 0..<20 { offsets.append(try await log.append(Array("m\(index)".utf8), partition: partition)) }
        let records = try await log.read(partition: partition, from: 0, maxBytes: .max)
        XCTAssertEqual(records.map(\.payload), (0..<20).map { Array("m\($0)".utf8) }, "a sender's messages keep their order")
        XCTAssertEqual(records.map(\.offset), offsets)
    }

    /// A flag shared between a test and its tasks.
    final class Flag: Sendable {
        private let value = Mutex(false)
        var isSet: Bool { value.withLock { $0 } }
        func set() { value.withLock { $0 = true } }
    }

    /// A wait in its own task, and whether it has returned.
    private func startWait(_ log: EmbeddedLog, partition: Int, interrupted: Flag? = nil) -> (task: Task<Void, Never>, ended: Flag) {
        let ended = Flag()
        let task = Task {
            await log.waitForRecords(partition: partition, at: 0) { interrupted?.isSet ?? false }
            ended.set()
        }
        return (task, ended)
    }

    /// Whether the wait has ended by `limit`; polled, so a broken wait fails the test instead
    /// of hanging it.
    private func endsWithin(_ limit: Duration, _ ended: Flag) async throws -> Bool {
        let deadline = ContinuousClock.now + limit
        while !ended.isSet {
            if ContinuousClock.now > deadline { return false }
            try await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// Waits until `count` readers wait in `partition`: the waits under test have begun.
    private func waitersBegin(_ log: EmbeddedLog, partition: Int, count: Int = 1) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while log.waiterCount(partition: partition) != count {
            guard ContinuousClock.now < deadline else { return XCTFail("\(count) waiter(s) in partition \(partition) expected") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func testAWaitForRecordsHasNoTimeoutAndEndsAtTheRecord() async throws {
        let log = try EmbeddedLog(directory: directory)
        defer { log.close() }
        let wait = startWait(log, partition: 3)
        // Longer than the 200 ms timeout and 50 ms sweep the waits had before.
        try await Task.sleep(for: .milliseconds(600))
        XCTAssertFalse(wait.ended.isSet, "nothing came: the wait goes on")
        XCTAssertEqual(log.waiterCount(partition: 3), 1)

        _ = try await log.append(Array("m".utf8), partition: 3)
        let ended = try await endsWithin(.seconds(5), wait.ended)
        XCTAssertTrue(ended, "the append wakes the waiter")

        let again = startWait(log, partition: 3)
        let endedAtOnce = try await endsWithin(.seconds(5), again.ended)
        XCTAssertTrue(endedAtOnce, "a record already there: no wait")
    }

    func testAStopEndsAWaitWhetherItComesBeforeOrDuringTheWait() async throws {
        let log = try EmbeddedLog(directory: directory)
        defer { log.close() }
        // During: the waiter's flag is set, then the waits are interrupted.
        let stopped = Flag()
        let during = startWait(log, partition: 1, interrupted: stopped)
        let other = startWait(log, partition: 2)
        try await waitersBegin(log, partition: 1)
        try await waitersBegin(log, partition: 2)
        XCTAssertFalse(during.ended.isSet)
        stopped.set()
        log.interruptWaits()
        let duringEnded = try await endsWithin(.seconds(5), during.ended)
        XCTAssertTrue(duringEnded, "the interruption ends the wait")
        // A waiter whose flag is not set is woken too and may wait again: nothing is lost.
        let otherEnded = try await endsWithin(.seconds(5), other.ended)
        XCTAssertTrue(otherEnded)

        // Before: the flag is already set, so the wait does not begin (there is no further
        // interruption to end it).
        let before = startWait(log, partition: 1, interrupted: stopped)
        let beforeEnded = try await endsWithin(.seconds(5), before.ended)
        XCTAssertTrue(beforeEnded, "a stop before the wait is not slept through")
    }

    func testCancellingAWaitEndsItAndACancelledTaskDoesNotWait() async throws {
        let log = try EmbeddedLog(directory: directory)
        defer { log.close() }
        let waiting = startWait(log, partition: 0)
        try await waitersBegin(log, partition: 0)
        XCTAssertFalse(waiting.ended.isSet)
        waiting.task.cancel()
        let cancelledEnded = try await endsWithin(.seconds(5), waiting.ended)
        XCTAssertTrue(cancelledEnded, "cancellation ends the wait")
        XCTAssertEqual(log.waiterCount(partition: 0), 0, "and takes it off the list")

        let endedFirst = Flag()
        Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await log.waitForRecords(partition: 0, at: 0) { false }
            endedFirst.set()
        }
        let cancelledFirstEnded = try await endsWithin(.seconds(5), endedFirst)
        XCTAssertTrue(cancelledFirstEnded, "a task cancelled before it waits does not wait")
    }

    func testClosingTheLogEndsTheWaits() async throws {
        let log = try EmbeddedLog(directory: directory)
        let waiting = startWait(log, partition: 2)
        try await waitersBegin(log, partition: 2)
        XCTAssertFalse(waiting.ended.isSet)
        log.close()
        let ended = try await endsWithin(.seconds(5), waiting.ended)
        XCTAssertTrue(ended, "closing the log ends the waits")
    }

    func testCommittedOffsetsPersistPerGroup() async throws {
        do {
            let log = try EmbeddedLog(directory: directory)
            try await log.commit(group: "actors", offsets: [2: 10])
            log.close()
        }
        let log = try EmbeddedLog(directory: directory)
        defer { log.close() }
        let committed = try await log.committedOffset(group: "actors", partition: 2)
        XCTAssertEqual(committed, 10)
        let other = try await log.committedOffset(group: "push", partition: 2)
        XCTAssertEqual(other, 0)
        do {
            try await log.commit(group: "../escape", offsets: [0: 1])
            XCTFail("a group name that is not a plain file name is refused")
        } catch {}
    }

    func testRetentionDeletesOnlyOldSegmentsEveryGroupHasPassed() async throws {
        var configuration = EmbeddedLog.Configuration()
        configuration.partitionCount = 1
        configuration.partition.maxSegmentBytes = 2 * 1024
        let log = try EmbeddedLog(directory: directory, configuration: configuration)
        defer { log.close() }
        for index in 0..<200 { _ = try await log.append([UInt8](repeating: UInt8(index % 256), count: 100), partition: 0) }
        let segmentFiles = { try FileManager.default.contentsOfDirectory(atPath: "\(self.directory!)/partitions/0").filter { $0.hasSuffix(".log") }.count }
        let before = try segmentFiles()
        XCTAssertGreaterThan(before, 5)

        XCTAssertEqual(try log.applyRetention(olderThan: .zero, now: Date().addingTimeInterval(60)), 0, "no consumer group yet: keep everything")
        try await log.commit(group: "actors", offsets: [0: 150])
        try await log.commit(group: "push", offsets: [0: 60])
        XCTAssertEqual(try log.applyRetention(olderThan: .seconds(3600)), 0, "segments younger than the retention stay")
        let deleted = try log.applyRetention(olderThan: .zero, now: Date().addingTimeInterval(60))
        XCTAssertGreaterThan(deleted, 0)
        XCTAssertEqual(try segmentFiles(), before - deleted)
        let remaining = try await log.read(partition: 0, from: 60, maxBytes: .max)
        XCTAssertEqual(remaining.first?.offset, 60, "everything the slowest group has not passed is still there")
        XCTAssertEqual(remaining.last?.offset, 199)
        do {
            _ = try await log.read(partition: 0, from: 0, maxBytes: .max)
            XCTFail("a read below retention must say so, not return nothing")
        } catch {
            guard case .belowRetention(0, let first) = error else { return XCTFail("\(error)") }
            XCTAssertGreaterThan(first, 0)
            XCTAssertLessThanOrEqual(first, 60)
        }
    }
}
