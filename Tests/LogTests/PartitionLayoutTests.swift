import Foundation
import XCTest
@testable import CourierLog

/// A log directory keeps the layout it was created with: opening it with another partition
/// count or range size is refused and changes nothing.
final class PartitionLayoutTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-layout-\(UUID().uuidString)").path
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func configuration(partitions: Int, usersPerRange: UInt64 = 64) -> EmbeddedLog.Configuration {
        var configuration = EmbeddedLog.Configuration()
        configuration.partitionCount = partitions
        configuration.usersPerRange = usersPerRange
        return configuration
    }

    private func partitionDirectories() throws -> Set<String> {
        Set(try FileManager.default.contentsOfDirectory(atPath: "\(directory!)/partitions").filter { Int($0) != nil })
    }

    private func assertRefused(_ configuration: EmbeddedLog.Configuration, holds: String = "holds 8 partitions of 64-user ranges", file: StaticString = #filePath, line: UInt = #line) {
        do {
            let log = try EmbeddedLog(directory: directory, configuration: configuration)
            log.close()
            XCTFail("opened with another layout", file: file, line: line)
        } catch {
            guard case .layoutChanged = error else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertTrue(error.description.contains(holds), error.description, file: file, line: line)
        }
    }

    func testAnotherPartitionCountOrRangeIsRefusedAndTheRecordsStayReadable() async throws {
        let sender: UInt64 = 4242
        let partition: Int
        do {
            let log = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
            partition = log.partition(forUser: sender)
            for index in 0..<5 { _ = try await log.append(Array("m\(index)".utf8), partition: partition) }
            log.close()
        }
        let layoutBefore = try XCTUnwrap(FileManager.default.contents(atPath: layoutFile))

        assertRefused(configuration(partitions: 4))
        assertRefused(configuration(partitions: 16))
        assertRefused(configuration(partitions: 8, usersPerRange: 32))

        XCTAssertEqual(try partitionDirectories(), Set((0..<8).map(String.init)), "no partition created or removed")
        XCTAssertEqual(FileManager.default.contents(atPath: layoutFile), layoutBefore, "the layout file is unchanged")
        let log = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
        defer { log.close() }
        XCTAssertEqual(log.partition(forUser: sender), partition, "the sender is routed where its records are")
        let records = try await log.read(partition: partition, from: 0, maxBytes: .max)
        XCTAssertEqual(records.map(\.payload), (0..<5).map { Array("m\($0)".utf8) })
    }

    private var layoutFile: String { "\(directory!)/partitions/\(PartitionLayout.fileName)" }

    /// A log of 8 partitions with a record in the one of `sender`, left as versions before the
    /// layout file left it.
    private func makeLegacyLog(sender: UInt64) async throws -> Int {
        let log = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
        let partition = log.partition(forUser: sender)
        _ = try await log.append(Array("m".utf8), partition: partition)
        log.close()
        try FileManager.default.removeItem(atPath: layoutFile)
        return partition
    }

    func testADirectoryFromBeforeTheLayoutFileIsJudgedByItsPartitions() async throws {
        _ = try await makeLegacyLog(sender: 4242)
        assertRefused(configuration(partitions: 4))
        assertRefused(configuration(partitions: 8, usersPerRange: 32))
        XCTAssertFalse(FileManager.default.fileExists(atPath: layoutFile), "a refusal writes nothing")

        let log = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
        log.close()
        XCTAssertTrue(FileManager.default.fileExists(atPath: layoutFile), "the accepted layout is recorded")
        try FileManager.default.removeItem(atPath: "\(directory!)/partitions/0") // judged by the file now, not the directories
        assertRefused(configuration(partitions: 4))
    }

    func testWithNoCountAskedForADirectoryKeepsItsOwnAndANewOneTakesTheDefault() async throws {
        let sender: UInt64 = 4242
        let partition = try await makeLegacyLog(sender: sender)  // 8 partitions, no layout file
        let unset = EmbeddedLog.Configuration()
        XCTAssertNil(unset.partitionCount)
        do {
            let log = try EmbeddedLog(directory: directory, configuration: unset)
            XCTAssertEqual(log.partitionCount, 8, "an old directory keeps the partitions it has")
            XCTAssertEqual(log.partition(forUser: sender), partition)
            let records = try await log.read(partition: partition, from: 0, maxBytes: .max)
            XCTAssertEqual(records.map(\.payload), [Array("m".utf8)])
            log.close()
        }
        do {
            let log = try EmbeddedLog(directory: directory, configuration: unset)
            XCTAssertEqual(log.partitionCount, 8, "and the recorded layout the next time")
            log.close()
        }
        assertRefused(configuration(partitions: EmbeddedLog.newPartitionCount))

        try FileManager.default.removeItem(atPath: directory)
        let fresh = try EmbeddedLog(directory: directory, configuration: unset)
        XCTAssertEqual(fresh.partitionCount, EmbeddedLog.newPartitionCount, "a new directory takes the default")
        fresh.close()
    }

    func testAnOldDirectoryWithAGapIsRefusedWhenItHoldsRecords() async throws {
        let partition = try await makeLegacyLog(sender: 4242)
        let missing = partition == 3 ? 4 : 3
        try FileManager.default.removeItem(atPath: "\(directory!)/partitions/\(missing)")
        assertRefused(configuration(partitions: 8), holds: "not numbered from 0 without a gap")
    }

    func testAFirstStartCutShortTakesTheLayoutAskedFor() throws {
        // An earlier version created partitions one by one and stopped after three, before any
        // record; stray entries that are no partition do not count, nor does a layout whose write was
        // cut short.
        for name in ["0", "1", "2", "9223372036854775807", "-1", "2048"] {
            try FileManager.default.createDirectory(atPath: "\(directory!)/partitions/\(name)", withIntermediateDirectories: true)
        }
        try Data("partial".utf8).write(to: URL(fileURLWithPath: "\(layoutFile).tmp")) // a write cut short
        let log = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
        XCTAssertEqual(log.partitionCount, 8)
        log.close()
        assertRefused(configuration(partitions: 4))
    }

    func testADamagedLayoutFileIsAnErrorNotAGuess() throws {
        let log = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
        log.close()
        let text = try XCTUnwrap(String(data: try XCTUnwrap(FileManager.default.contents(atPath: layoutFile)), encoding: .utf8))
        try Data(text.replacingOccurrences(of: "partitions 8", with: "partitions 4").utf8).write(to: URL(fileURLWithPath: layoutFile))
        do {
            let reopened = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 4))
            reopened.close()
            XCTFail("a layout whose checksum fails is not believed")
        } catch {
            guard case .layoutUnreadable(_, let reason) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(reason, "its checksum does not match")
        }
        // Nor is one that cannot be read as a file.
        try FileManager.default.removeItem(atPath: layoutFile)
        try FileManager.default.createDirectory(atPath: layoutFile, withIntermediateDirectories: false)
        do {
            let reopened = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
            reopened.close()
            XCTFail("an unreadable layout is not taken for a missing one")
        } catch {
            guard case .layoutUnreadable = error else { return XCTFail("\(error)") }
        }
    }
}
