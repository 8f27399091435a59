import Foundation
import XCTest
@testable import CourierLog

final class SegmentTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-segment-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func path(_ baseOffset: UInt64 = 100) -> String { directory.appendingPathComponent(Segment.fileName(baseOffset: baseOffset)).path }

    func payload(_ offset: UInt64) -> [UInt8] { Array("record \(offset) ".utf8) + [UInt8](repeating: UInt8(offset % 251), count: Int(offset % 300)) }

    /// A segment at base offset 100 holding `count` records, synced and closed.
    func writeSegment(count: Int) throws {
        let segment = Segment.create(baseOffset: 100, file: try PosixLogFile(path: path(), create: true))
        for start in stride(from: 0, to: count, by: 10) {
            let batch = (start..<min(start + 10, count)).map { payload(100 + UInt64($0)) }
            XCTAssertEqual(try segment.append(batch), 100 + UInt64(start))
        }
        try segment.sync()
        segment.close()
    }

    func testFileNamesSortByOffset() {
        XCTAssertEqual(Segment.fileName(baseOffset: 42), "00000000000000000042.log")
        XCTAssertLessThan(Segment.fileName(baseOffset: 9), Segment.fileName(baseOffset: 10))
    }

    func testRecoverReadsEveryRecordBackAndTheIndexFindsAnyOffset() throws {
        try writeSegment(count: 500)
        let (segment, cut) = try recoverNewest()
        defer { segment.close() }
        XCTAssertEqual(cut, 0)
        XCTAssertEqual(segment.nextOffset, 600)
        for offset in [UInt64(100), 101, 250, 377, 599] {
            let records = try segment.read(from: offset, maxBytes: 1)
            XCTAssertEqual(records.first?.offset, offset)
            XCTAssertEqual(records.first?.payload, payload(offset))
        }
        let all = try segment.read(from: 100, maxBytes: .max)
        XCTAssertEqual(all.map(\.offset), Array(100..<600))
        XCTAssertTrue(try segment.read(from: 600, maxBytes: 100).isEmpty)
    }

    func testTornTailOfTheNewestSegmentIsCutOff() throws {
        try writeSegment(count: 20)
        let intact = try PosixLogFile(path: path(), create: false)
        let intactSize = intact.size
        // A write of two more records that only got partly to disk.
        var partial: [UInt8] = []
        RecordFrame.append(offset: 120, payload: payload(120), to: &partial)
        RecordFrame.append(offset: 121, payload: payload(121), to: &partial)
        try intact.append(Array(partial.prefix(partial.count - 5)))
        intact.close()

        let (segment, cut) = try recoverNewest()
        defer { segment.close() }
        XCTAssertEqual(segment.nextOffset, 121, "record 120 of the torn write was whole, so it stays")
        XCTAssertEqual(try segment.read(from: 120, maxBytes: 1).first?.payload, payload(120))
        var first: [UInt8] = []
        RecordFrame.append(offset: 120, payload: payload(120), to: &first)
        XCTAssertEqual(cut, partial.count - 5 - first.count, "exactly the unfinished record is cut")
        XCTAssertEqual(segment.size, intactSize + first.count)
        XCTAssertEqual(try segment.read(from: 121, maxBytes: 1).count, 0, "record 121 was torn")
    }

    func testGarbageTailIsCutOffOnlyInTheNewestSegment() throws {
        try writeSegment(count: 20)
        let file = try PosixLogFile(path: path(), create: false)
        let intactSize = file.size
        try file.append([0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        file.close()

        XCTAssertThrowsError(try Segment.recover(baseOffset: 100, file: try PosixLogFile(path: path(), create: false), isNewest: false)) { error in
            guard case .corruptRecord(let segment, let position, let expected, _) = error as? LogRecoveryError else { return XCTFail("\(error)") }
            XCTAssertEqual(segment, Segment.fileName(baseOffset: 100))
            XCTAssertEqual(position, intactSize)
            XCTAssertEqual(expected, 120)
        }
        let (segment, cut) = try recoverNewest()
        XCTAssertEqual(cut, 16)
        XCTAssertEqual(segment.size, intactSize)
        segment.close()
    }

    /// The file's length on disk, zeros written ahead included.
    func lengthOnDisk() throws -> Int {
        try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path())[.size] as? Int)
    }

    func testPreallocatedZerosKeepTheLengthUntilUsedAndRecoveryEndsTheRecordsThere() throws {
        let chunk = 2048
        let segment = Segment.create(baseOffset: 100, file: try PosixLogFile(path: path(), create: true, preallocation: chunk))
        var lengths: [Int] = []
        for offset in UInt64(100)..<140 {
            _ = try segment.append([payload(offset)])
            try segment.sync()
            lengths.append(try lengthOnDisk())
        }
        let used = segment.size
        segment.close()
        XCTAssertGreaterThan(used, chunk, "the records outgrow one chunk of zeros")
        XCTAssertTrue(lengths.allSatisfy { $0 % chunk == 0 && $0 > 0 }, "the file grows by whole chunks of zeros: \(lengths)")
        XCTAssertEqual(Set(lengths).count, used / chunk + 1, "its length changes once per chunk, not with every append: \(lengths)")

        let (recovered, cut) = try Segment.recover(baseOffset: 100, file: try PosixLogFile(path: path(), create: false, preallocation: chunk), isNewest: true)
        XCTAssertEqual(cut, 0, "the zeros are room written ahead, not a torn write")
        XCTAssertEqual(recovered.nextOffset, 140)
        XCTAssertEqual(recovered.size, used, "the newest segment appends where its records end")
        XCTAssertEqual(try lengthOnDisk(), used, "and is cut there")
        XCTAssertEqual(try recovered.read(from: 100, maxBytes: .max).map(\.payload), (UInt64(100)..<140).map(payload))
        XCTAssertEqual(try recovered.append([payload(140)]), 140)
        try recovered.sync()
        XCTAssertEqual(try lengthOnDisk() % chunk, 0, "an append past the end writes zeros ahead again")
        recovered.close()

        let (older, olderCut) = try Segment.recover(baseOffset: 100, file: try PosixLogFile(path: path(), create: false), isNewest: false)
        defer { older.close() }
        XCTAssertEqual(olderCut, 0, "zeros in an older segment (one not trimmed when it rolled) end its records too")
        XCTAssertEqual(older.nextOffset, 141)
        XCTAssertEqual(try older.read(from: 140, maxBytes: .max).map(\.payload), [payload(140)])
    }

    /// Records 100-109 synced in a segment with `preallocation` zeros ahead, closed; returns
    /// where they end.
    func syncedRecordsBeforeZeros(preallocation: Int) throws -> Int {
        let segment = Segment.create(baseOffset: 100, file: try PosixLogFile(path: path(), create: true, preallocation: preallocation))
        defer { segment.close() }
        _ = try segment.append((UInt64(100)..<110).map(payload))
        try segment.sync()
        return segment.size
    }

    /// Writes `bytes` over the file at `position`, past the log's own writer.
    func overwrite(at position: Int, with bytes: some Sequence<UInt8>) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path()))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(position))
        try handle.write(contentsOf: Array(bytes))
    }

    /// The segment at base offset 100 reopened and recovered as the newest.
    func recoverNewest() throws -> (segment: Segment, truncatedBytes: Int) {
        try Segment.recover(baseOffset: 100, file: try PosixLogFile(path: path(), create: false), isNewest: true)
    }

    /// The frames of records `offsets` (payloads by `payload`), back to back.
    func frames(_ offsets: Range<UInt64>) -> [UInt8] {
        var bytes: [UInt8] = []
        for offset in offsets { RecordFrame.append(offset: offset, payload: payload(offset), to: &bytes) }
        return bytes
    }

    func testATornWriteIntoPreallocatedZerosIsCut() throws {
        let intact = try syncedRecordsBeforeZeros(preallocation: 16 * 1024)
        // Two more records that only partly reached the zeros.
        var partial: [UInt8] = []
        RecordFrame.append(offset: 110, payload: payload(110), to: &partial)
        RecordFrame.append(offset: 111, payload: payload(111), to: &partial)
        try overwrite(at: intact, with: partial.prefix(partial.count - 7))

        let (recovered, cut) = try recoverNewest()
        defer { recovered.close() }
        XCTAssertGreaterThan(cut, 0, "a record cut short among the zeros is a torn write")
        XCTAssertEqual(recovered.nextOffset, 111, "record 110 was whole, so it stays")
        XCTAssertEqual(try recovered.read(from: 110, maxBytes: .max).map(\.payload), [payload(110)])
    }

    /// Synced records 100-109, then a batch 110-189 written over the zeros ahead of which one
    /// whole page, past the batch's first records, reads as `pageFill`; returns the segment's
    /// recovery and where the page starts.
    func recoverAfterAPageOfALaterBatch(reads pageFill: UInt8) throws -> (Result<(segment: Segment, truncatedBytes: Int), Error>, page: Int) {
        let intact = try syncedRecordsBeforeZeros(preallocation: 64 * 1024)
        let batch = frames(110..<190)
        let page = (intact + 4095) / 4096 * 4096
        XCTAssertGreaterThan(page, intact + 200, "the batch has whole records before the page")
        XCTAssertLessThan(page + 4096 + 1000, intact + batch.count, "and after it")
        try overwrite(at: intact, with: batch)
        try overwrite(at: page, with: repeatElement(pageFill, count: 4096))
        return (Result { try recoverNewest() }, page)
    }

    func testAPageAPowerCutKeptFromTheDiskEndsTheRecordsThoughLaterOnesReachedIt() throws {
        let (recovery, page) = try recoverAfterAPageOfALaterBatch(reads: 0)
        let (segment, cut) = try recovery.get()
        defer { segment.close() }
        XCTAssertGreaterThan(cut, 0, "the unfinished batch is cut")
        XCTAssertGreaterThan(segment.nextOffset, 110, "the batch's records before the missing page are whole, so they stay")
        XCTAssertLessThan(segment.nextOffset, 190, "none after it does")
        XCTAssertLessThanOrEqual(segment.size, page)
        XCTAssertEqual(try segment.read(from: 100, maxBytes: .max).map(\.payload), (UInt64(100)..<segment.nextOffset).map(payload))
    }

    /// Synced records 100..<110 before zeros, and the part of a batch of 110..<190 that lies
    /// past the page those records end in, as if that page never reached the disk again.
    func batchPastThePageOfTheLastSyncedRecords() throws -> (intact: Int, ownPageEnd: Int) {
        let intact = try syncedRecordsBeforeZeros(preallocation: 64 * 1024)
        let ownPageEnd = (intact / 4096 + 1) * 4096
        XCTAssertNotEqual(intact % 4096, 0, "the synced records end inside a page")
        let batch = frames(110..<190)
        XCTAssertLessThan(ownPageEnd + 1000, intact + batch.count, "the batch has whole records past that page")
        try overwrite(at: ownPageEnd, with: batch[(ownPageEnd - intact)...])
        return (intact, ownPageEnd)
    }

    /// The page that held the last synced records is the one the disk never got again: it
    /// reads as those records, then zeros to its end, and the next page has the batch's later
    /// records. Nothing after the synced records was acknowledged, so they end there.
    func testThePageOfTheLastSyncedRecordsKeptFromTheDiskEndsTheRecordsThere() throws {
        let (intact, _) = try batchPastThePageOfTheLastSyncedRecords()
        let (segment, cut) = try recoverNewest()
        defer { segment.close() }
        XCTAssertGreaterThan(cut, 0, "the unfinished batch is cut")
        XCTAssertEqual(segment.nextOffset, 110)
        XCTAssertEqual(segment.size, intact)
        XCTAssertEqual(try segment.read(from: 100, maxBytes: .max).map(\.payload), (UInt64(100)..<110).map(payload))
    }

    /// The same, with one byte after the synced records that is not zero: not what an unwritten
    /// page reads as, so damage.
    func testThatPageWithAByteThatIsNotZeroIsALoudError() throws {
        let (_, ownPageEnd) = try batchPastThePageOfTheLastSyncedRecords()
        try overwrite(at: ownPageEnd - 1, with: [0x5A])
        XCTAssertThrowsError(try recoverNewest()) { error in
            guard case .corruptRecord = error as? LogRecoveryError else { return XCTFail("\(error)") }
        }
    }

    /// Synced records that end `leftover` bytes before the first page's end, then a batch's
    /// bytes from the second page on (the first page never reached the disk again): recovered.
    func recoverWithTheLastSyncedRecordEnding(_ leftover: Int) throws -> Result<(segment: Segment, truncatedBytes: Int), Error> {
        let segment = Segment.create(baseOffset: 100, file: try PosixLogFile(path: path(), create: true, preallocation: 64 * 1024))
        // One record whose frame (8 header bytes, 8 of offset, the payload) ends there.
        _ = try segment.append([[UInt8](repeating: 7, count: 4096 - leftover - 16)])
        try segment.sync()
        XCTAssertEqual(segment.size, 4096 - leftover)
        segment.close()
        let batch = frames(101..<140)
        try overwrite(at: 4096, with: batch[leftover...])
        return Result { try recoverNewest() }
    }

    /// The rest of the page holds a whole length field of zeros, which no written record has:
    /// cut. With fewer bytes left it could be the low bytes of a written record's length (256
    /// has a zero low byte), so it stays a loud error rather than risk cutting synced records.
    func testTheRestOfThePageCountsAsUnwrittenOnlyWhenItHoldsALengthField() throws {
        let (segment, cut) = try recoverWithTheLastSyncedRecordEnding(4).get()
        XCTAssertGreaterThan(cut, 0)
        XCTAssertEqual(segment.nextOffset, 101)
        segment.close()
        try FileManager.default.removeItem(atPath: path())

        XCTAssertThrowsError(try recoverWithTheLastSyncedRecordEnding(2).get()) { error in
            guard case .corruptRecord(_, let position, _, _) = error as? LogRecoveryError else { return XCTFail("\(error)") }
            XCTAssertEqual(position, 4094)
        }
    }

    func testTheSamePageDamagedIsALoudErrorNotACut() throws {
        let (recovery, _) = try recoverAfterAPageOfALaterBatch(reads: 0xAB)
        XCTAssertThrowsError(try recovery.get(), "records after bytes that are not zeros: damage") { error in
            guard case .corruptRecord = error as? LogRecoveryError else { return XCTFail("\(error)") }
        }
    }

    func testBadChecksumInTheMiddleIsALoudErrorNeverATruncation() throws {
        try writeSegment(count: 50)
        let file = try PosixLogFile(path: path(), create: false)
        let size = file.size
        file.close()
        // Flip one byte inside an early record's payload.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path()))
        try handle.seek(toOffset: 40)
        let original = try handle.read(upToCount: 1)![0]
        try handle.seek(toOffset: 40)
        try handle.write(contentsOf: [original ^ 0x55])
        try handle.close()

        XCTAssertThrowsError(try recoverNewest()) { error in
            guard case .corruptRecord(_, let position, let expected, let reason) = error as? LogRecoveryError else { return XCTFail("\(error)") }
            XCTAssertEqual(position, 0)
            XCTAssertEqual(expected, 100)
            XCTAssertTrue(reason.contains("checksum"), reason)
        }
        XCTAssertEqual(try PosixLogFile(path: path(), create: false).size, size, "nothing was cut")
    }

    func testRecordsMustContinueTheOffsetSequence() throws {
        let segment = Segment.create(baseOffset: 100, file: try PosixLogFile(path: path(), create: true))
        _ = try segment.append([payload(100)])
        try segment.sync()
        segment.close()
        // A record numbered 105 after 100: offsets must be dense.
        let file = try PosixLogFile(path: path(), create: false)
        var stray: [UInt8] = []
        RecordFrame.append(offset: 105, payload: [1], to: &stray)
        RecordFrame.append(offset: 106, payload: [1], to: &stray)
        try file.append(stray)
        file.close()
        XCTAssertThrowsError(try recoverNewest())
    }
}
