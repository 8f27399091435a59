import ArgumentParser
import CourierLog
import Foundation

/// `courier-server bench-log`: append throughput and append-to-durable latency of one log
/// partition at several concurrencies, beside this machine's own floor measured in the same run
/// (bare write+fdatasync rate and sequential write bandwidth).
struct BenchLog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-log",
        abstract: "Measure the durable log against this disk's fdatasync floor."
    )

    @Option(help: "Directory to write in (a fresh subdirectory is made and removed).")
    var directory = FileManager.default.temporaryDirectory.path

    @Option(help: "Seconds per measurement.")
    var seconds = 5.0

    @Option(help: "Record payload size in bytes.")
    var recordBytes = 200

    @Option(parsing: .upToNextOption, help: "Concurrent appenders to measure.")
    var appenders: [Int] = [1, 64, 1024]

    func validate() throws {
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        guard (1...RecordFrame.maxPayloadSize).contains(recordBytes) else { throw ValidationError("--record-bytes must be 1-\(RecordFrame.maxPayloadSize)") }
        guard !appenders.isEmpty, appenders.allSatisfy({ (1...100_000).contains($0) }) else { throw ValidationError("--appenders must be 1-100000") }
    }

    func run() async throws {
        let root = "\(directory)/courier-bench-log-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }

        let floor = try DiskFloor.measure(in: root, recordBytes: recordBytes, seconds: seconds)
        print("disk floor: \(Int(floor.syncsPerSecond)) write+fdatasync/s (p50 \(format(floor.syncP50)) p99 \(format(floor.syncP99)) ms), sequential write \(Int(floor.sequentialMiBPerSecond)) MiB/s")
        let largest = appenders.max()!
        let batched = try DiskFloor.batchedRecordRate(in: root, recordBytes: recordBytes + RecordFrame.headerSize + 8, batch: largest, seconds: seconds)
        print("raw floor: \(Int(batched)) records/s writing \(largest)-record batches with one fdatasync each")

        for concurrency in appenders {
            let partition = try Partition(directory: "\(root)/p\(concurrency)")
            let cpuBefore = processorSeconds()
            let result = await Self.measure(partition, concurrency: concurrency, recordBytes: recordBytes, seconds: seconds)
            let cpu = (processorSeconds() - cpuBefore) / seconds
            let (syncs, records) = partition.commitStatistics
            partition.close()
            let reopenStart = ContinuousClock.now
            let reopened = try Partition(directory: "\(root)/p\(concurrency)")
            let reopenMilliseconds = milliseconds(ContinuousClock.now - reopenStart)
            let recordsOnDisk = reopened.nextOffset
            reopened.close()
            print("appenders \(concurrency): \(Int(result.perSecond)) appends/s, p50 \(format(result.p50)) ms, p99 \(format(result.p99)) ms, \(String(format: "%.1f", Double(records) / Double(max(syncs, 1)))) records per sync, \(String(format: "%.2f", cpu)) cores busy; reopening verified \(recordsOnDisk) records in \(Int(reopenMilliseconds)) ms")
        }
    }

    private func format(_ milliseconds: Double) -> String { String(format: "%.2f", milliseconds) }

    struct Result { var perSecond: Double; var p50: Double; var p99: Double }

    static func measure(_ partition: Partition, concurrency: Int, recordBytes: Int, seconds: Double) async -> Result {
        let payload = [UInt8](repeating: 0x5A, count: recordBytes)
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int(seconds * 1000))
        let latencies = await withTaskGroup(of: [Double].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var latencies: [Double] = []
                    while clock.now < deadline {
                        let start = clock.now
                        guard (try? await partition.append(payload)) != nil else { continue }
                        latencies.append(milliseconds(clock.now - start))
                    }
                    return latencies
                }
            }
            var all: [Double] = []
            for await some in group { all += some }
            return all.sorted()
        }
        guard !latencies.isEmpty else { return Result(perSecond: 0, p50: 0, p99: 0) }
        return Result(perSecond: Double(latencies.count) / seconds, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99))
    }
}

/// This disk's floor, measured the plain way.
enum DiskFloor {
    /// Records per second when `batch` framed records go out in one write and one fdatasync:
    /// what group commit could reach with no overhead at all.
    static func batchedRecordRate(in directory: String, recordBytes: Int, batch: Int, seconds: Double) throws -> Double {
        let clock = ContinuousClock()
        let chunk = [UInt8](repeating: 0x77, count: recordBytes * batch)
        let file = try PosixLogFile(path: "\(directory)/floor-batched", create: true)
        defer { file.close() }
        let start = clock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        var records = 0
        while clock.now < end {
            try file.append(chunk)
            try file.sync()
            records += batch
        }
        return Double(records) / (milliseconds(clock.now - start) / 1000)
    }

    struct Figures { var syncsPerSecond: Double; var syncP50: Double; var syncP99: Double; var sequentialMiBPerSecond: Double }

    static func measure(in directory: String, recordBytes: Int, seconds: Double) throws -> Figures {
        let clock = ContinuousClock()
        let record = [UInt8](repeating: 0xA5, count: recordBytes)
        let syncFile = try PosixLogFile(path: "\(directory)/floor-sync", create: true)
        var syncLatencies: [Double] = []
        let syncEnd = clock.now + .milliseconds(Int(seconds * 1000))
        while clock.now < syncEnd {
            let start = clock.now
            try syncFile.append(record)
            try syncFile.sync()
            syncLatencies.append(milliseconds(clock.now - start))
        }
        syncFile.close()
        syncLatencies.sort()

        let block = [UInt8](repeating: 0x3C, count: 1 << 20)
        let sequential = try PosixLogFile(path: "\(directory)/floor-sequential", create: true)
        let start = clock.now
        let writeEnd = start + .milliseconds(Int(seconds * 1000))
        var written = 0
        while clock.now < writeEnd {
            try sequential.append(block)
            written += block.count
        }
        try sequential.sync()
        let elapsed = milliseconds(clock.now - start) / 1000
        sequential.close()
        return Figures(
            syncsPerSecond: Double(syncLatencies.count) / seconds,
            syncP50: percentile(syncLatencies, 0.5),
            syncP99: percentile(syncLatencies, 0.99),
            sequentialMiBPerSecond: Double(written) / 1_048_576 / elapsed
        )
    }
}

/// User plus system CPU seconds this process has used.
private func processorSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

private func milliseconds(_ duration: Duration) -> Double {
    duration / .milliseconds(1)
}

private func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
    sorted[min(sorted.count - 1, max(0, Int((Double(sorted.count) * fraction).rounded(.up)) - 1))]
}
