import Foundation
import XCTest
@testable import CourierLog

/// The log on a 1 MiB tmpfs: once it is full, appends fail with `.diskFull` (never an
/// acknowledgement), the partition keeps working, and appends succeed again when room returns.
final class DiskFullTests: XCTestCase {
    func testFullDiskFailsAppendsAndTheLogRecoversWhenRoomReturns() async throws {
        let mountPoint = FileManager.default.temporaryDirectory.appendingPathComponent("courier-full-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: mountPoint) }
        guard try await Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint]) == 0 else {
            throw XCTSkip("cannot mount a tmpfs here (needs root): the disk-full test did not run")
        }
        do {
            try await fillAndRecover(mountPoint)
        } catch {
            _ = try? await Self.run("/bin/umount", [mountPoint])
            throw error
        }
        _ = try await Self.run("/bin/umount", [mountPoint])
    }

    /// Runs a tool to completion; polls, since `waitUntilExit` can spin on Linux.
    static func run(_ tool: String, _ arguments: [String]) async throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        try process.run()
        while process.isRunning { try await Task.sleep(for: .milliseconds(5)) }
        return process.terminationStatus
    }

    func fillAndRecover(_ mountPoint: String) async throws {

        // Fill most of the space with a file we can delete later.
        let filler = "\(mountPoint)/filler"
        XCTAssertTrue(FileManager.default.createFile(atPath: filler, contents: Data(count: 700 * 1024)))
        let partition = try Partition(directory: "\(mountPoint)/log")
        var acknowledged: [UInt64: [UInt8]] = [:]
        var diskFull = 0
        for index in 0..<2_000 {
            let payload = [UInt8](repeating: UInt8(index % 256), count: 500)
            do {
                acknowledged[try await partition.append(payload)] = payload
            } catch .diskFull {
                diskFull += 1
                if diskFull >= 5 { break }
            } catch {
                return XCTFail("expected .diskFull, got \(error)")
            }
        }
        XCTAssertGreaterThan(diskFull, 0, "a 1 MiB disk fills up")
        XCTAssertGreaterThan(acknowledged.count, 100)

        // Room again: appends succeed and continue the offsets densely.
        try FileManager.default.removeItem(atPath: filler)
        let next = try await partition.append([1, 2, 3])
        XCTAssertEqual(next, UInt64(acknowledged.count), "no offset was used by a failed append")
        partition.close()

        let reopened = try Partition(directory: "\(mountPoint)/log")
        defer { reopened.close() }
        let records = try reopened.read(from: 0, maxBytes: .max)
        XCTAssertEqual(records.count, acknowledged.count + 1)
        for record in records.dropLast() { XCTAssertEqual(record.payload, acknowledged[record.offset]) }
        print("disk full: \(acknowledged.count) appends acknowledged, \(diskFull) refused with .diskFull, log usable again")
    }
}
