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

    private func assertRefused(_ configuration: EmbeddedLog.Configuration, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let log = try EmbeddedLog(directory: directory, configuration: configuration)
            log.close()
            XCTFail("opened with another layout", file: file, line: line)
        } catch {
            guard case .layoutChanged = error else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertTrue(error.description.contains("was created with 8 partitions of 64-user ranges"), error.description, file: file, line: line)
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
        let layoutFile = "\(directory!)/partitions/\(PartitionLayout.fileName)"
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

    func testADirectoryFromBeforeTheLayoutFileIsJudgedByItsPartitions() throws {
        // What earlier versions left: partition directories and no layout file.
        for index in 0..<8 {
            try FileManager.default.createDirectory(atPath: "\(directory!)/partitions/\(index)", withIntermediateDirectories: true)
        }
        assertRefused(configuration(partitions: 4))
        XCTAssertNil(FileManager.default.contents(atPath: "\(directory!)/partitions/\(PartitionLayout.fileName)"), "a refusal writes nothing")

        let log = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
        log.close()
        assertRefused(configuration(partitions: 4))
    }

    func testADamagedLayoutFileIsAnErrorNotAGuess() throws {
        let log = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 8))
        log.close()
        let layoutFile = "\(directory!)/partitions/\(PartitionLayout.fileName)"
        let text = try XCTUnwrap(String(data: try XCTUnwrap(FileManager.default.contents(atPath: layoutFile)), encoding: .utf8))
        try Data(text.replacingOccurrences(of: "partitions 8", with: "partitions 4").utf8).write(to: URL(fileURLWithPath: layoutFile))
        do {
            let reopened = try EmbeddedLog(directory: directory, configuration: configuration(partitions: 4))
            reopened.close()
            XCTFail("a layout whose checksum fails is not believed")
        } catch {
            guard case .corruptRecord(_, _, _, let reason) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(reason, "checksum mismatch")
        }
    }
}
