import Foundation

/// One partition of the durable log: a directory of segments and a writer thread that group
/// commits. Every append waiting when the writer comes round shares one write and one
/// fdatasync, so batches grow with the load and nothing waits on a timer at low load.
///
/// `append` returns only once its record is on stable storage. The queue of waiting appends is
/// bounded (`maxQueuedAppends`); past it `append` fails at once with `.overloaded`.
public final class Partition: @unchecked Sendable {
    // @unchecked: `queue`, `failure` and `stopping` are guarded by `condition`; `segments` by
    // `segmentsLock`. The writer thread is the only one that appends to segments.

    public struct Configuration: Sendable {
        /// A segment rolls over once it is this large.
        public var maxSegmentBytes = 64 * 1024 * 1024
        /// Appends waiting for the writer; beyond it `append` fails with `.overloaded`.
        public var maxQueuedAppends = 65_536
        /// Bytes the writer takes into one write and sync.
        public var maxBatchBytes = 4 * 1024 * 1024
        /// Max-Age a refused append suggests.
        public var overloadRetryAfterSeconds: UInt32 = 1

        public init() {}
    }

    private struct PendingAppend {
        var payload: [UInt8]
        var continuation: CheckedContinuation<Result<UInt64, LogAppendError>, Never>
    }

    public let directory: String
    public let configuration: Configuration
    private let condition = NSCondition()
    private var queue: [PendingAppend] = []
    private var failure: LogAppendError?
    private var stopping = false
    private let segmentsLock = NSLock()
    private var segments: [Segment]
    private let writerStopped = NSCondition()
    private var writerRunning = true

    private var committedBatches = 0
    private var committedRecords = 0

    /// Batches written and synced, and the records in them, since opening: their ratio is the
    /// group-commit factor.
    public var commitStatistics: (batches: Int, records: Int) {
        segmentsLock.withLock { (committedBatches, committedRecords) }
    }

    /// What recovery cut off the newest segment, in bytes (0 when the log was closed cleanly).
    public let recoveredTornBytes: Int

    /// Opens (creating if needed) the partition in `directory`, recovering every segment.
    public init(directory: String, configuration: Configuration = Configuration()) throws(LogRecoveryError) {
        self.directory = directory
        self.configuration = configuration
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(LogIOError(operation: .open, path: directory, errno: EIO))
        }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".log") }
            .sorted()
        var segments: [Segment] = []
        var torn = 0
        for (position, name) in names.enumerated() {
            guard let baseOffset = UInt64(name.dropLast(4)), Segment.fileName(baseOffset: baseOffset) == name else { continue }
            let file: PosixLogFile
            do { file = try PosixLogFile(path: "\(directory)/\(name)", create: false) } catch { throw .io(error) }
            let (segment, cut) = try Segment.recover(baseOffset: baseOffset, file: file, isNewest: position == names.count - 1)
            if let previous = segments.last, previous.nextOffset != baseOffset {
                throw .corruptRecord(segment: name, position: 0, expectedOffset: previous.nextOffset, reason: "segment starts at \(baseOffset), the one before ends at \(previous.nextOffset)")
            }
            segments.append(segment)
            torn += cut
        }
        if segments.isEmpty {
            do {
                let file = try PosixLogFile(path: "\(directory)/\(Segment.fileName(baseOffset: 0))", create: true)
                try PosixLogFile.syncDirectory(directory)
                segments.append(Segment.create(baseOffset: 0, file: file))
            } catch {
                throw .io(error)
            }
        }
        self.segments = segments
        self.recoveredTornBytes = torn
        let thread = Thread { [self] in runWriter() }
        thread.name = "courier-log-\((directory as NSString).lastPathComponent)"
        thread.start()
    }

    /// The offset the next record will get.
    public var nextOffset: UInt64 {
        segmentsLock.withLock { segments.last!.nextOffset }
    }

    /// Appends one record; returns its offset once it is on stable storage.
    public func append(_ payload: [UInt8]) async throws(LogAppendError) -> UInt64 {
        guard payload.count <= RecordFrame.maxPayloadSize else {
            throw .writeFailed("record of \(payload.count) bytes is above the \(RecordFrame.maxPayloadSize)-byte limit")
        }
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<UInt64, LogAppendError>, Never>) in
            condition.lock()
            defer { condition.unlock() }
            if let failure {
                continuation.resume(returning: .failure(failure))
            } else if stopping {
                continuation.resume(returning: .failure(.closed))
            } else if queue.count >= configuration.maxQueuedAppends {
                continuation.resume(returning: .failure(.overloaded(retryAfterSeconds: configuration.overloadRetryAfterSeconds)))
            } else {
                queue.append(PendingAppend(payload: payload, continuation: continuation))
                condition.signal()
            }
        }
        return try result.get()
    }

    /// Records from `offset` on, up to about `maxBytes` (at least one if any), in offset order.
    public func read(from offset: UInt64, maxBytes: Int) throws(LogIOError) -> [(offset: UInt64, payload: [UInt8])] {
        segmentsLock.lock()
        defer { segmentsLock.unlock() }
        guard let start = segments.lastIndex(where: { $0.baseOffset <= offset }) else { return [] }
        var records: [(offset: UInt64, payload: [UInt8])] = []
        var bytes = 0
        for segment in segments[start...] {
            let found = try segment.read(from: max(offset, segment.baseOffset), maxBytes: maxBytes - bytes)
            records += found
            bytes += found.reduce(0) { $0 + $1.payload.count }
            if bytes >= maxBytes { break }
        }
        return records
    }

    /// Deletes whole segments whose records all lie below `offset` and whose file was last
    /// written before `cutoff`. The newest segment always stays. Returns how many were deleted.
    func deleteSegments(below offset: UInt64, modifiedBefore cutoff: Date) throws(LogIOError) -> Int {
        segmentsLock.lock()
        defer { segmentsLock.unlock() }
        var deleted = 0
        while segments.count > 1, segments[0].nextOffset <= offset {
            let path = "\(directory)/\(segments[0].name)"
            let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? Date()
            guard modified < cutoff else { break }
            segments[0].close()
            guard unlink(path) == 0 else { throw LogIOError(operation: .delete, path: path, errno: errno) }
            segments.removeFirst()
            deleted += 1
        }
        if deleted > 0 { try PosixLogFile.syncDirectory(directory) }
        return deleted
    }

    /// Stops taking appends, lets the writer finish what is queued, and closes the files.
    public func close() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        writerStopped.lock()
        while writerRunning { writerStopped.wait() }
        writerStopped.unlock()
        segmentsLock.withLock { for segment in segments { segment.close() } }
    }

    // MARK: - Writer thread

    private func runWriter() {
        while let batch = nextBatch() {
            let result = commit(batch.map(\.payload))
            for (index, pending) in batch.enumerated() {
                pending.continuation.resume(returning: result.map { $0 + UInt64(index) })
            }
        }
        writerStopped.lock()
        writerRunning = false
        writerStopped.signal()
        writerStopped.unlock()
    }

    /// Waits for appends and takes as many as fit one batch; nil once closed and drained.
    private func nextBatch() -> [PendingAppend]? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && !stopping { condition.wait() }
        guard !queue.isEmpty else { return nil }
        var bytes = 0
        var count = 0
        while count < queue.count && (count == 0 || bytes + queue[count].payload.count <= configuration.maxBatchBytes) {
            bytes += queue[count].payload.count
            count += 1
        }
        guard count < queue.count else {
            defer { queue = [] }
            return queue
        }
        let batch = Array(queue.prefix(count))
        queue.removeFirst(count)
        return batch
    }

    /// Writes and syncs one batch; returns the first offset.
    private func commit(_ payloads: [[UInt8]]) -> Result<UInt64, LogAppendError> {
        segmentsLock.lock()
        defer { segmentsLock.unlock() }
        do {
            if segments.last!.size >= configuration.maxSegmentBytes { try roll() }
            let first = try segments.last!.append(payloads)
            try segments.last!.sync()
            committedBatches += 1
            committedRecords += payloads.count
            return .success(first)
        } catch {
            switch error.operation {
            // A failed write (cut back off the file) or a new segment that could not be created
            // leaves the partition as it was: the batch fails, later appends may succeed.
            case .write where error.isDiskFull, .open where error.isDiskFull:
                return .failure(.diskFull("\(error)"))
            case .write, .open:
                return .failure(.writeFailed("\(error)"))
            default:
                // A failed sync or cut: the file's state is unknown, so accept nothing more.
                return .failure(failPartition("\(error)"))
            }
        }
    }

    private func roll() throws(LogIOError) {
        let baseOffset = segments.last!.nextOffset
        let file = try PosixLogFile(path: "\(directory)/\(Segment.fileName(baseOffset: baseOffset))", create: true)
        do {
            try PosixLogFile.syncDirectory(directory)
        } catch {
            file.close()
            throw error
        }
        segments.append(Segment.create(baseOffset: baseOffset, file: file))
    }

    private func failPartition(_ detail: String) -> LogAppendError {
        let error = LogAppendError.partitionFailed(detail)
        condition.lock()
        failure = error
        let waiting = queue
        queue = []
        condition.unlock()
        for pending in waiting { pending.continuation.resume(returning: .failure(error)) }
        FileHandle.standardError.write(Data("courier-log: PARTITION \(directory) STOPPED: \(detail)\n".utf8))
        return error
    }
}
