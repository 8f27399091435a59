import TestSupport
import XCTest
@testable import CourierLog

final class CrashRecoveryTests: XCTestCase {
    /// Hundreds of seeded crashes at random points between appends and syncs: recovery keeps
    /// every acknowledged (synced) record byte for byte, in order, and the segment takes
    /// appends again afterwards.
    func testNoAcknowledgedRecordIsLostAtAnyCrashPoint() throws {
        var truncations = 0
        for seed in 0..<400 {
            var generator = SplitMix64(seed: UInt64(seed))
            let file = FaultyLogFile()
            let segment = Segment.create(baseOffset: 1000, file: file)
            var acknowledged: [(UInt64, [UInt8])] = []
            var unsynced: [(UInt64, [UInt8])] = []
            for _ in 0..<Int.random(in: 1...30, using: &generator) {
                let batch = (0..<Int.random(in: 1...6, using: &generator)).map { _ in
                    (0..<Int.random(in: 0...300, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                }
                let first = try segment.append(batch)
                unsynced += batch.enumerated().map { (first + UInt64($0.offset), $0.element) }
                if Bool.random(using: &generator) {
                    try segment.sync()
                    acknowledged += unsynced
                    unsynced = []
                }
            }
            let survived = file.crash(using: &generator)
            let reopened = FaultyLogFile(content: survived)
            let (recovered, cut) = try Segment.recover(baseOffset: 1000, file: reopened, isNewest: true)
            if cut > 0 { truncations += 1 }
            let records = try recovered.read(from: 1000, maxBytes: .max)
            XCTAssertGreaterThanOrEqual(records.count, acknowledged.count, "seed \(seed): acknowledged records lost")
            for (index, (offset, payload)) in acknowledged.enumerated() where index < records.count {
                XCTAssertEqual(records[index].offset, offset, "seed \(seed)")
                XCTAssertEqual(records[index].payload, payload, "seed \(seed): record \(offset) changed")
            }
            // Whatever survived beyond the acknowledged ones is a whole record that was written.
            for record in records.dropFirst(acknowledged.count) {
                XCTAssertEqual(unsynced.first { $0.0 == record.offset }?.1, record.payload, "seed \(seed)")
            }
            let next = try recovered.append([[42]])
            XCTAssertEqual(next, 1000 + UInt64(records.count), "seed \(seed): appends continue densely")
        }
        print("crash recovery: 400 seeded crashes, \(truncations) torn tails cut")
        XCTAssertGreaterThan(truncations, 50, "the fault layer must actually tear tails")
    }
}

