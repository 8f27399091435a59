import TestSupport
import XCTest
@testable import CourierLog

final class CrashRecoveryTests: XCTestCase {
    /// The one refusal a page kept from the disk may still cause, on purpose: the records end
    /// 1-3 bytes before a page's end, too few to tell an unwritten page from the low bytes of a
    /// written record's length (`Segment.containsZeroPage`), so it stays a loud error.
    static func isTheRefusalWithinALengthField(_ error: any Error) -> Bool {
        guard case .corruptRecord(_, let position, _, _) = error as? LogRecoveryError else { return false }
        return (1...3).contains(4096 - position % 4096)
    }

    /// Zeros a seeded run's files keep written ahead (`PosixLogFile`): none, less than a page,
    /// a page, and what the server uses.
    static let preallocations = [0, 512, 4096, 64 * 1024]

    /// Hundreds of seeded crashes at random points between appends and syncs, with and without
    /// zeros written ahead, unsynced pages reaching the disk in any order among them: recovery
    /// keeps every acknowledged (synced) record byte for byte, in order, never fails, and the
    /// segment takes appends again afterwards.
    func testNoAcknowledgedRecordIsLostAtAnyCrashPoint() throws {
        var truncations = 0
        var lengthFieldRefusals = 0
        for seed in 0..<800 {
            var generator = SplitMix64(seed: UInt64(seed))
            let preallocation = Self.preallocations[seed % Self.preallocations.count]
            let file = FaultyLogFile(preallocation: preallocation)
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
            let reopened = FaultyLogFile(content: survived, preallocation: preallocation)
            let (recovered, cut): (Segment, Int)
            do {
                (recovered, cut) = try Segment.recover(baseOffset: 1000, file: reopened, isNewest: true)
            } catch {
                if Self.isTheRefusalWithinALengthField(error) {
                    lengthFieldRefusals += 1
                } else {
                    XCTFail("seed \(seed), preallocation \(preallocation): recovery failed: \(error)")
                }
                continue
            }
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
        print("crash recovery: 800 seeded crashes, \(truncations) torn tails cut, \(lengthFieldRefusals) refused within a length field")
        XCTAssertGreaterThan(truncations, 100, "the fault layer must actually tear tails")
    }
}


/// Crashes of a whole partition, segment rolls and directory entries included, at seeded
/// random moments while concurrent appenders run.
final class PartitionCrashTests: XCTestCase {
    /// What the appenders saw before the crash: an append answered after the crash snapshot
    /// does not count, since its sync may have come after it.
    final class Witness: @unchecked Sendable {
        private let lock = NSLock()
        private var generator: SplitMix64
        private let crashAfter: Int
        private(set) var acknowledged: [UInt64: [UInt8]] = [:]
        private(set) var crashed: FaultyFileSystem?
        let fileSystem: FaultyFileSystem

        init(fileSystem: FaultyFileSystem, crashAfter: Int, seed: UInt64) {
            self.fileSystem = fileSystem
            self.crashAfter = crashAfter
            generator = SplitMix64(seed: seed)
        }

        func acknowledge(_ offset: UInt64, _ payload: [UInt8]) {
            lock.withLock {
                guard crashed == nil else { return }
                acknowledged[offset] = payload
                if acknowledged.count == crashAfter { crashed = fileSystem.crash(using: &generator) }
            }
        }

        func crashIfStillRunning() -> FaultyFileSystem {
            lock.withLock {
                if crashed == nil { crashed = fileSystem.crash(using: &generator) }
                return crashed!
            }
        }
    }

    func testNoAcknowledgedAppendIsLostWhenAWholePartitionCrashes() async throws {
        var acknowledgedTotal = 0
        var survivorsBeyondAcknowledged = 0
        var multiSegmentCrashes = 0
        for seed in 0..<200 {
            var generator = SplitMix64(seed: UInt64(seed) &+ 7_000)
            // Slow syncs let the writer run ahead of the sync thread, as on a real disk.
            let fileSystem = FaultyFileSystem(syncMicroseconds: UInt32.random(in: 0...400, using: &generator),
                                              preallocation: CrashRecoveryTests.preallocations[seed % CrashRecoveryTests.preallocations.count])
            var configuration = Partition.Configuration()
            configuration.maxSegmentBytes = Int.random(in: 150...1500, using: &generator)
            let partition = try Partition(directory: "/log", configuration: configuration, fileSystem: fileSystem)
            let appenders = Int.random(in: 1...8, using: &generator)
            let perAppender = Int.random(in: 1...25, using: &generator)
            let witness = Witness(fileSystem: fileSystem, crashAfter: Int.random(in: 0...appenders * perAppender, using: &generator), seed: generator.next())
            var attempted: [[UInt8]: Bool] = [:]
            var plans: [[[UInt8]]] = []
            for appender in 0..<appenders {
                plans.append((0..<perAppender).map { index in
                    Array("s\(seed)a\(appender)i\(index)-".utf8) + [UInt8](repeating: UInt8(index), count: Int.random(in: 0...120, using: &generator))
                })
                for payload in plans.last! { attempted[payload] = true }
            }
            await withTaskGroup(of: Void.self) { group in
                for plan in plans {
                    group.addTask {
                        for payload in plan {
                            guard let offset = try? await partition.append(payload) else { continue }
                            witness.acknowledge(offset, payload)
                        }
                    }
                }
            }
            let crashed = witness.crashIfStillRunning()
            partition.close()

            if try crashed.contentsOfDirectory("/log").count > 1 { multiSegmentCrashes += 1 }
            let recovered: Partition
            do {
                recovered = try Partition(directory: "/log", configuration: configuration, fileSystem: crashed)
            } catch {
                XCTAssertTrue(CrashRecoveryTests.isTheRefusalWithinALengthField(error), "seed \(seed): recovery failed: \(error)")
                continue
            }
            let records = try recovered.read(from: 0, maxBytes: .max)
            XCTAssertEqual(records.map(\.offset), (0..<UInt64(records.count)).map { $0 }, "seed \(seed): offsets dense from 0")
            var seen: Set<[UInt8]> = []
            for record in records {
                XCTAssertNotNil(attempted[record.payload], "seed \(seed): record \(record.offset) is nothing that was appended")
                XCTAssertTrue(seen.insert(record.payload).inserted, "seed \(seed): record \(record.offset) appears twice")
            }
            for (offset, payload) in witness.acknowledged {
                XCTAssertLessThan(offset, UInt64(records.count), "seed \(seed): acknowledged record \(offset) lost")
                if offset < UInt64(records.count) {
                    XCTAssertEqual(records[Int(offset)].payload, payload, "seed \(seed): acknowledged record \(offset) changed")
                }
            }
            let next = try await recovered.append([1, 2, 3])
            XCTAssertEqual(next, UInt64(records.count), "seed \(seed): appends continue densely after recovery")
            recovered.close()
            acknowledgedTotal += witness.acknowledged.count
            survivorsBeyondAcknowledged += records.count - witness.acknowledged.count
        }
        print("partition crashes: 200 seeds, \(acknowledgedTotal) acknowledged records all kept, \(survivorsBeyondAcknowledged) unacknowledged survived whole, \(multiSegmentCrashes) crashes with several segments")
        XCTAssertGreaterThan(multiSegmentCrashes, 50, "segments must roll in these runs")
    }
}
