import Foundation

/// The embedded log: a fixed number of partitions under one directory, plus each consumer
/// group's committed offsets. Partitions are chosen by sender user range.
public final class EmbeddedLog: MessageLog, @unchecked Sendable {
    // @unchecked: `partitions` never changes after init; `groups` is guarded by `lock`.

    /// A new directory's partitions. Four since a partition's consumer reads when the store's
    /// linger is over: fewer partitions no longer make a message wait behind its partition's
    /// batch, and with fewer, appends share syncs and consumer wakes more often (README, "What
    /// one message costs the server"). Directories made before keep their 16.
    public static let newPartitionCount = 4

    public struct Configuration: Sendable {
        /// Nil: the count the directory was created with, or `newPartitionCount` for a new
        /// one. A count set here must be the directory's (`PartitionLayout`).
        public var partitionCount: Int?
        /// Consecutive user ids that share a partition before the next range is spread elsewhere.
        public var usersPerRange: UInt64 = 64
        public var partition = Partition.Configuration()
        /// Where segments live; tests and benchmarks put other layers here.
        public var fileSystem: any LogFileSystem = PosixFileSystem()
        public init() {}
    }

    public let directory: String
    public let configuration: Configuration
    private let partitions: [Partition]
    private let lock = NSLock()
    private var groups: [String: ConsumerOffsets] = [:]
    /// Offset commits (write, fsync, rename, fsync) block; they run here, not on Swift's
    /// cooperative threads, which must stay free for the gateway and the actors.
    private let blockingIO = DispatchQueue(label: "courier-log-io", attributes: .concurrent)

    public var partitionCount: Int { partitions.count }

    /// Opens the log, recovering every partition; the partition count is fixed for a directory.
    public init(directory: String, configuration: Configuration = Configuration()) throws(LogRecoveryError) {
        precondition((configuration.partitionCount.map { $0 > 0 } ?? true) && configuration.usersPerRange > 0)
        self.directory = directory
        self.configuration = configuration
        let layout = try PartitionLayout.settle(
            partitionCount: configuration.partitionCount, usersPerRange: configuration.usersPerRange, newCount: Self.newPartitionCount,
            in: "\(directory)/partitions", logDirectory: directory, partition: configuration.partition, fileSystem: configuration.fileSystem
        )
        var partitions: [Partition] = []
        for index in 0..<layout.partitionCount {
            partitions.append(try Partition(directory: "\(directory)/partitions/\(index)", configuration: configuration.partition, fileSystem: configuration.fileSystem))
        }
        self.partitions = partitions
        // Groups with committed offsets on disk take part in retention from the start.
        let consumers = "\(directory)/consumers"
        for file in (try? FileManager.default.contentsOfDirectory(atPath: consumers)) ?? [] where file.hasSuffix(".offsets") {
            let name = String(file.dropLast(".offsets".count))
            guard ConsumerOffsets.isValidGroupName(name) else { continue }
            groups[name] = try ConsumerOffsets(directory: consumers, group: name)
        }
    }

    public func partition(forUser userID: UInt64) -> Int {
        // Ranges are mixed before the modulo, so consecutive ranges spread over all partitions.
        var range = userID / configuration.usersPerRange
        range = (range ^ (range >> 30)) &* 0xBF58_476D_1CE4_E5B9
        range = (range ^ (range >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((range ^ (range >> 31)) % UInt64(partitions.count))
    }

    public func append(_ payload: [UInt8], partition: Int) async throws(LogAppendError) -> UInt64 {
        try await partitions[partition].append(payload)
    }

    public func read(partition: Int, from offset: UInt64, maxBytes: Int) async throws(LogReadError) -> [LogRecord] {
        // On the caller's thread: a consumer reads what was just written, which the page cache
        // holds, so the pread does not wait on the disk; a hop to another thread and back
        // would cost two context switches per batch for nothing.
        try partitions[partition].read(from: offset, maxBytes: maxBytes).map { LogRecord(offset: $0.offset, payload: $0.payload) }
    }

    public func durableNextOffset(partition: Int) async -> UInt64 {
        partitions[partition].durableNextOffset
    }

    public func waitForRecords(partition: Int, at offset: UInt64, unless interrupted: () -> Bool) async {
        await partitions[partition].waitForRecords(at: offset, unless: interrupted)
    }

    /// Readers waiting for records in `partition` now (for tests: a wait has begun).
    package func waiterCount(partition: Int) -> Int { partitions[partition].waiterCount }

    public func interruptWaits() {
        for partition in partitions { partition.interruptWaits() }
    }

    public func committedOffset(group: String, partition: Int) async throws(LogIOError) -> UInt64 {
        try offsets(of: group).committed(partition: partition)
    }

    public func commit(group: String, offsets moved: [Int: UInt64]) async throws(LogIOError) {
        let offsets = try offsets(of: group)
        try await offCooperativePool { () throws(LogIOError) in try offsets.commit(moved) }
    }

    private func offCooperativePool<T: Sendable, Failure: Error>(_ body: @escaping @Sendable () throws(Failure) -> T) async throws(Failure) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, Failure>, Never>) in
            blockingIO.async {
                do throws(Failure) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    private func offsets(of group: String) throws(LogIOError) -> ConsumerOffsets {
        guard ConsumerOffsets.isValidGroupName(group) else {
            throw LogIOError(operation: .open, path: "consumer group '\(group)'", errno: EINVAL)
        }
        lock.lock()
        defer { lock.unlock() }
        if let existing = groups[group] { return existing }
        do {
            let offsets = try ConsumerOffsets(directory: "\(directory)/consumers", group: group)
            groups[group] = offsets
            return offsets
        } catch {
            throw LogIOError(operation: .read, path: "\(directory)/consumers/\(group).offsets", errno: EIO)
        }
    }

    /// Deletes segments that every consumer group has committed past and that are older than
    /// `retention`; with no consumer group, nothing is deleted. Returns the segments deleted.
    @discardableResult
    public func applyRetention(olderThan retention: Duration, now: Date = Date()) throws(LogIOError) -> Int {
        let known = lock.withLock { Array(groups.values) }
        guard !known.isEmpty else { return 0 }
        let cutoff = now.addingTimeInterval(-(retention / .seconds(1)))
        var deleted = 0
        for (index, partition) in partitions.enumerated() {
            let lowest = known.map { $0.committed(partition: index) }.min()!
            deleted += try partition.deleteSegments(below: lowest, modifiedBefore: cutoff)
        }
        return deleted
    }

    public func close() {
        for partition in partitions { partition.close() }
    }
}
