import Foundation
import XCTest
@testable import CourierLog

final class PartitionTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-partition-\(UUID().uuidString)").path
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func payload(_ index: Int) -> [UInt8] { Array("message \(index) ".utf8) + [UInt8](repeating: UInt8(index % 256), count: index % 200) }

    /// Appends `count` records from as many concurrent tasks; returns offset -> payload.
    func appendConcurrently(_ partition: Partition, count: Int, from start: Int = 0) async throws -> [UInt64: [UInt8]] {
        try await withThrowingTaskGroup(of: (UInt64, [UInt8]).self) { group in
            for index in start..<start + count {
                group.addTask {
                    let bytes = Self.payload(index)
                    return (try await partition.append(bytes), bytes)
                }
            }
            var written: [UInt64: [UInt8]] = [:]
            for try await (offset, bytes) in group {
                XCTAssertNil(written[offset], "offset \(offset) handed out twice")
                written[offset] = bytes
            }
            return written
        }
    }

    func testConcurrentAppendsGetDenseOffsetsShareSyncsAndSurviveReopening() async throws {
        let partition = try Partition(directory: directory)
        let written = try await appendConcurrently(partition, count: 1000)
        XCTAssertEqual(Set(written.keys), Set(0..<1000), "offsets are dense from 0")
        let (batches, committed) = partition.commitStatistics
        XCTAssertEqual(committed, 1000)
        XCTAssertLessThan(batches, committed, "concurrent appends share a sync (group commit)")
        print("group commit: 1000 records in \(batches) syncs")
        partition.close()

        let reopened = try Partition(directory: directory)
        defer { reopened.close() }
        XCTAssertEqual(reopened.recoveredTornBytes, 0)
        XCTAssertEqual(reopened.nextOffset, 1000)
        let records = try reopened.read(from: 0, maxBytes: .max)
        XCTAssertEqual(records.map(\.offset), Array(0..<1000))
        for record in records { XCTAssertEqual(record.payload, written[record.offset]) }
    }

    func testSegmentsRollAndReadsCrossThem() async throws {
        var configuration = Partition.Configuration()
        configuration.maxSegmentBytes = 4 * 1024
        let partition = try Partition(directory: directory, configuration: configuration)
        for index in 0..<300 { _ = try await partition.append(Self.payload(index)) }
        partition.close()
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".log") }.sorted()
        XCTAssertGreaterThan(files.count, 5, "a 4 KiB segment limit rolls many segments")
        XCTAssertEqual(files.first, Segment.fileName(baseOffset: 0))
        for name in files.dropLast() {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(directory!)/\(name)")))
            var position = 0
            while case .record(_, _, let next) = RecordFrame.scan(bytes, at: position) { position = next }
            XCTAssertEqual(position, bytes.count, "\(name) was cut back to its records when it rolled, no zeros after them")
        }
        XCTAssertGreaterThan(try FileManager.default.attributesOfItem(atPath: "\(directory!)/\(files.last!)")[.size] as? Int ?? 0, 4 * 1024,
                             "the newest segment keeps zeros written ahead")

        let reopened = try Partition(directory: directory, configuration: configuration)
        defer { reopened.close() }
        XCTAssertEqual(try reopened.read(from: 0, maxBytes: .max).map(\.payload), (0..<300).map(Self.payload))
        XCTAssertEqual(try reopened.read(from: 157, maxBytes: 1).first?.payload, Self.payload(157))
        let next = try await reopened.append([1, 2, 3])
        XCTAssertEqual(next, 300, "appends continue after the last segment")
    }

    func testFullQueueFailsFastWithOverloaded() async throws {
        var configuration = Partition.Configuration()
        configuration.maxQueuedAppends = 1
        let partition = try Partition(directory: directory, configuration: configuration)
        defer { partition.close() }
        let outcomes = await withTaskGroup(of: Result<UInt64, LogAppendError>.self) { group in
            for index in 0..<500 {
                group.addTask {
                    do throws(LogAppendError) { return .success(try await partition.append(Self.payload(index))) } catch { return .failure(error) }
                }
            }
            var outcomes: [Result<UInt64, LogAppendError>] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        let offsets = outcomes.compactMap { try? $0.get() }
        let refused = outcomes.filter { if case .failure(.overloaded) = $0 { true } else { false } }.count
        XCTAssertGreaterThan(refused, 0, "a bound of 1 waiting append refuses some of 500 at once")
        XCTAssertEqual(offsets.count + refused, 500, "every append either got an offset or was refused")
        XCTAssertEqual(Set(offsets), Set(0..<UInt64(offsets.count)), "the accepted ones are dense")
    }

    func testClosedPartitionRefusesAppends() async throws {
        let partition = try Partition(directory: directory)
        partition.close()
        do {
            _ = try await partition.append([1])
            XCTFail("expected .closed")
        } catch {
            XCTAssertEqual(error, .closed)
        }
    }

    func testReadsSeeOnlyDurableRecordsAndRunDuringASync() async throws {
        // Syncs take 300 ms: long enough to read while one is under way.
        let partition = try Partition(directory: "/log", fileSystem: FaultyFileSystem(syncMicroseconds: 300_000))
        defer { partition.close() }
        let first = try await partition.append([1])
        let pending = Task { try await partition.append([2]) }
        try await Task.sleep(for: .milliseconds(100))
        let clock = ContinuousClock()
        let start = clock.now
        let during = try partition.read(from: first, maxBytes: .max)
        XCTAssertLessThan(clock.now - start, .milliseconds(100), "a read does not wait for the sync")
        XCTAssertEqual(during.map(\.payload), [[1]], "the record being synced is not visible yet")
        let second = try await pending.value
        XCTAssertEqual(try partition.read(from: first, maxBytes: .max).map(\.offset), [first, second])
    }

    func testReadAfterCloseIsAnError() throws {
        let partition = try Partition(directory: directory)
        partition.close()
        XCTAssertThrowsError(try partition.read(from: 0, maxBytes: 10)) { XCTAssertEqual($0 as? LogReadError, .closed) }
    }
}
