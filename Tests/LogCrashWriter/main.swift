// A child process for the log's kill -9 test: appends records to a partition from many
// concurrent tasks and prints "ack OFFSET HEXPAYLOAD" once each append returns (is durable),
// until it is killed, so the parent can check every acknowledged record byte for byte.
import CourierLog
import Foundation

/// One write(2) per line: short lines on a pipe are never interleaved, and nothing waits in a
/// buffer when the kill comes.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

guard CommandLine.arguments.count == 3, let runSeed = UInt64(CommandLine.arguments[2]) else {
    FileHandle.standardError.write(Data("usage: LogCrashWriter DIRECTORY SEED\n".utf8))
    exit(2)
}

/// The payload for a seed: 16-300 bytes, reproducible by the parent.
func payload(for seed: UInt64) -> [UInt8] {
    var state = seed
    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    let length = 16 + Int(next() % 285)
    return withUnsafeBytes(of: seed.littleEndian, Array.init) + (8..<length).map { _ in UInt8(truncatingIfNeeded: next()) }
}

let partition: Partition
do {
    partition = try Partition(directory: CommandLine.arguments[1])
} catch {
    FileHandle.standardError.write(Data("open failed: \(error)\n".utf8))
    exit(1)
}
say("ready \(partition.nextOffset)")
await withTaskGroup(of: Void.self) { group in
    for writer in 0..<16 {
        group.addTask {
            var counter: UInt64 = 0
            while true {
                let seed = runSeed << 32 | UInt64(writer) << 24 | counter
                counter += 1
                let bytes = payload(for: seed)
                if let offset = try? await partition.append(bytes) {
                    say("ack \(offset) \(bytes.map { String(format: "%02x", $0) }.joined())")
                }
            }
        }
    }
}
