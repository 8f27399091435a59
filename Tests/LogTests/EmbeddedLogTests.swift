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

    func testAWaitForRecordsEndsAtItsTimeoutOrAtTheRecordWithoutATimerOfItsOwn() async throws {
        let log = try EmbeddedLog(directory: directory)
        defer { log.close() }
        // Nothing comes: the log's one sweeper ends the wait after its timeout.
        let clock = ContinuousClock()
        let started = clock.now
        await log.waitForRecords(partition: 3, at: 0, timeout: .milliseconds(150))
        let waited = clock.now - started
        XCTAssertGreaterThanOrEqual(waited, .milliseconds(150), "not before the timeout")
        XCTAssertLessThan(waited, .seconds(5), "the sweeper ends it")

        // A record comes: the wait ends then, long before a timeout of a minute.
        async let woken: Void = log.waitForRecords(partition: 3, at: 0, timeout: .seconds(60))
        try await Task.sleep(for: .milliseconds(50))
        _ = try await log.append(Array("m".utf8), partition: 3)
        let appendedAt = clock.now
        await woken
        XCTAssertLessThan(clock.now - appendedAt, .seconds(5), "the append wakes the waiter")
    }

    /// A timer that counts its sleeps and ignores cancellation: the sweep must end with the log
    /// even so.
    final class CountingTimer: LogTimer {
        let sleeps = Mutex(0)
        var executor: any TaskExecutor { globalConcurrentExecutor }

        func sleep(for duration: Duration) async {
            sleeps.withLock { $0 += 1 }
            await Task.detached { try? await Task.sleep(for: duration) }.value
        }
    }

    func testTheSweepSleepsOnTheTimerItIsGivenAndEndsWithTheLog() async throws {
        let timer = CountingTimer()
        let log = try EmbeddedLog(directory: directory, sweepTimer: timer)
        let clock = ContinuousClock()
        let started = clock.now
        await log.waitForRecords(partition: 1, at: 0, timeout: .milliseconds(150))
        XCTAssertGreaterThanOrEqual(clock.now - started, .milliseconds(150), "not before the timeout")
        XCTAssertLessThan(clock.now - started, .seconds(5), "the sweep ends it")
        XCTAssertGreaterThanOrEqual(timer.sleeps.withLock { $0 }, 1, "the sweep slept on the timer")
        log.close()
        try await Task.sleep(for: .milliseconds(200))
        let afterClose = timer.sleeps.withLock { $0 }
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertEqual(timer.sleeps.withLock { $0 }, afterClose, "no sweep after close")
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
