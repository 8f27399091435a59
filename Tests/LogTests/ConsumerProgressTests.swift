import Foundation
import XCTest
@testable import CourierLog

final class ConsumerProgressTests: XCTestCase {
    func testCommittableStopsAtTheFirstGap() {
        var progress = ContiguousProgress(resumingAt: 10)
        XCTAssertFalse(progress.markProcessed(12))
        XCTAssertFalse(progress.markProcessed(13))
        XCTAssertEqual(progress.committable, 10, "11 and 10 are not done: nothing past them may be committed")
        XCTAssertTrue(progress.markProcessed(10))
        XCTAssertEqual(progress.committable, 11)
        XCTAssertTrue(progress.markProcessed(11))
        XCTAssertEqual(progress.committable, 14, "closing the gap releases what finished ahead")
        XCTAssertEqual(progress.waitingBeyondGap, 0)
        XCTAssertFalse(progress.markProcessed(3), "a replay below the committed point changes nothing")
        XCTAssertEqual(progress.committable, 14)
    }

    func testRandomCompletionOrderNeverCommitsPastAnUnfinishedRecord() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            var progress = ContiguousProgress(resumingAt: 0)
            var done = Set<UInt64>()
            for offset in (0..<200).map(UInt64.init).shuffled(using: &generator) {
                progress.markProcessed(offset)
                done.insert(offset)
                XCTAssertTrue((0..<progress.committable).allSatisfy(done.contains))
                XCTAssertFalse(done.contains(progress.committable))
            }
            XCTAssertEqual(progress.committable, 200)
        }
    }

    func testOffsetsSurviveReopeningAndOnlyMoveForward() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-offsets-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let offsets = try ConsumerOffsets(directory: directory, group: "actors")
        XCTAssertEqual(offsets.committed(partition: 3), 0)
        try offsets.commit([3: 41])
        try offsets.commit([7: 5])
        try offsets.commit([3: 17])
        XCTAssertEqual(offsets.committed(partition: 3), 41, "an older commit is ignored")

        let reopened = try ConsumerOffsets(directory: directory, group: "actors")
        XCTAssertEqual(reopened.committed(partition: 3), 41)
        XCTAssertEqual(reopened.committed(partition: 7), 5)
        XCTAssertEqual(try ConsumerOffsets(directory: directory, group: "other").committed(partition: 3), 0, "groups are separate")
    }

    func testDamagedOffsetsFileIsALoudError() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-offsets-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try ConsumerOffsets(directory: directory, group: "actors").commit([1: 99])
        let path = "\(directory)/actors.offsets"
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "1 99", with: "1 98")
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try ConsumerOffsets(directory: directory, group: "actors"))
    }

    func testGroupNames() {
        XCTAssertTrue(ConsumerOffsets.isValidGroupName("chat-actors_1"))
        XCTAssertFalse(ConsumerOffsets.isValidGroupName("../etc"))
        XCTAssertFalse(ConsumerOffsets.isValidGroupName(""))
    }
}
