import Foundation
import XCTest
@testable import CourierLog

/// Real processes, real kill -9: a child appends from 16 tasks and prints each acknowledged
/// offset; it is killed at a random moment, the partition is reopened, and every acknowledged
/// record must be there byte for byte, in order, once.
final class KillNineTests: XCTestCase {
    func testKillNineNeverLosesAnAcknowledgedRecord() async throws {
        let cycles = Int(ProcessInfo.processInfo.environment["COURIER_KILL_CYCLES"] ?? "") ?? 50
        let writer = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("LogCrashWriter").path
        guard FileManager.default.isExecutableFile(atPath: writer) else {
            return XCTFail("\(writer) is missing: build with `swift build --build-tests` (scripts/test does)")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-kill9-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }

        var acknowledged: [UInt64: [UInt8]] = [:]
        var tornBytes = 0
        var tornCycles = 0
        for cycle in 0..<cycles {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: writer)
            child.arguments = [directory, "\(cycle + 1)"]
            let output = Pipe()
            child.standardOutput = output
            try child.run()
            let reader = Task.detached { output.fileHandleForReading.readDataToEndOfFile() }
            try await Task.sleep(for: .milliseconds(Int.random(in: 80...400)))
            kill(child.processIdentifier, SIGKILL)
            let text = String(decoding: await reader.value, as: UTF8.self)
            while child.isRunning { try await Task.sleep(for: .milliseconds(5)) }

            // Only complete lines count: the kill may cut the last one.
            for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() where line.hasPrefix("ack ") {
                let fields = line.split(separator: " ")
                let offset = UInt64(fields[1])!
                XCTAssertNil(acknowledged[offset], "offset \(offset) acknowledged twice")
                acknowledged[offset] = Self.bytes(fromHex: fields[2])
            }

            let partition = try Partition(directory: directory)
            if partition.recoveredTornBytes > 0 { tornCycles += 1 }
            tornBytes += partition.recoveredTornBytes
            let records = try partition.read(from: 0, maxBytes: .max)
            partition.close()
            XCTAssertEqual(records.map(\.offset), Array(0..<UInt64(records.count)), "cycle \(cycle): offsets dense and in order")
            for (offset, payload) in acknowledged {
                guard offset < records.count else {
                    XCTFail("cycle \(cycle): acknowledged offset \(offset) lost (log holds \(records.count))")
                    continue
                }
                XCTAssertEqual(records[Int(offset)].payload, payload, "cycle \(cycle): offset \(offset) differs")
            }
        }
        print("kill -9: \(cycles) cycles, \(acknowledged.count) acknowledged records all present; torn tails cut in \(tornCycles) cycles (\(tornBytes) bytes)")
        XCTAssertGreaterThan(acknowledged.count, cycles, "the children acknowledged appends before being killed")
    }

    static func bytes(fromHex hex: Substring) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }
}
