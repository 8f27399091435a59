import XCTest
@testable import CourierLog

final class RecordFrameTests: XCTestCase {
    func testCRC32CKnownVectors() {
        // RFC 3720 §B.4 and the common check value.
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum(Array(0...31)), 0x46DD_794E)
        XCTAssertEqual(CRC32C.checksum([]), 0)
    }

    func testCRC32CContinuesAcrossPieces() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for split in [0, 1, 7, 8, 9, 500, 999] {
            let first = CRC32C.checksum(bytes[..<split])
            XCTAssertEqual(CRC32C.checksum(bytes[split...], continuing: first), CRC32C.checksum(bytes), "split at \(split)")
        }
    }

    func testRoundTripAndNext() {
        var buffer: [UInt8] = []
        RecordFrame.append(offset: 7, payload: Array("hello".utf8), to: &buffer)
        RecordFrame.append(offset: 8, payload: [], to: &buffer)
        guard case .record(let offset, let payload, let next) = RecordFrame.scan(buffer, at: 0) else { return XCTFail() }
        XCTAssertEqual(offset, 7)
        XCTAssertEqual(Array(payload), Array("hello".utf8))
        guard case .record(8, let empty, let end) = RecordFrame.scan(buffer, at: next) else { return XCTFail() }
        XCTAssertTrue(empty.isEmpty)
        XCTAssertEqual(RecordFrame.scan(buffer, at: end), .end)
    }

    func testEveryTruncationIsTornAndEveryBitFlipIsCaught() {
        var buffer: [UInt8] = []
        RecordFrame.append(offset: 1, payload: Array("a record worth keeping".utf8), to: &buffer)
        for length in 1..<buffer.count {
            XCTAssertEqual(RecordFrame.scan(Array(buffer.prefix(length)), at: 0), .torn, "cut at \(length)")
        }
        for bit in 0..<(buffer.count * 8) {
            var damaged = buffer
            damaged[bit / 8] ^= 1 << (bit % 8)
            if case .record = RecordFrame.scan(damaged, at: 0) { XCTFail("bit \(bit) flipped and still read as a record") }
        }
    }

    func testZeroHeaderIsTornNotCorrupt() {
        XCTAssertEqual(RecordFrame.scan([UInt8](repeating: 0, count: 64), at: 0), .torn)
    }
}
