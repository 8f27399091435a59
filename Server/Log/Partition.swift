import Dispatch
import Foundation
import Synchronization

/// One partition of the durable log: a directory of segments and a writer thread that group
/// commits. Every append waiting when the writer comes round shares one write and one
/// fdatasync, so batches grow with the load and nothing waits on a timer at low load.
///
/// One thread writes and syncs: a second thread writing the next batch during a sync was
/// measured no faster (a write into the page under writeback waits for it) and slower at one
/// appender (one more thread hand-off per append).
///
/// `append` returns only once its record is on stable storage. The queue of waiting appends is
/// bounded (`maxQueuedAppends`); past it `append` fails at once with `.overloaded`.
public final class Partition: @unchecked Sendable {
    // @unchecked: `queue`, `failure` and `stopping` are guarded by `condition`; `segments`,
    // `isClosed` and the statistics by `segmentsLock`. Only the writer thread appends to segments.

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

    private typealias Continuation = UnsafeContinuation<Result<UInt64, LogAppendError>, Never>

    private struct PendingAppend {
        var payload: [UInt8]
        var continuation: Continuation
    }

    public let directory: String
    public let configuration: Configuration
    private let fileSystem: any LogFileSystem

    private let condition = NSCondition()
    private var queue: [PendingAppend] = []
    private var failure: LogAppendError?
    private var stopping = false
    /// The queue length at which an append wakes the writer (0: the writer is not waiting).
    private var wakeWriterAt = 0
    /// Appends answered by the last batch, and how long its write and sync took: the writer
    /// gives that many appenders up to that long to come back before it starts the next batch.
    private var lastBatchCount = 0
    private var lastCommitDuration = Duration.zero
    /// Readers waiting for records at or beyond an offset (consumers at the end of the log):
    /// one per consumer of the partition.
    private var waiters: [UInt64: (offset: UInt64, continuation: CheckedContinuation<Void, Never>)] = [:]
    private let waiterIDs = Atomic<UInt64>(0)

    private let segmentsLock = NSLock()
    private var segments: [Segment]
    private var isClosed = false
    private var committedSyncs = 0
    private var committedRecords = 0

    private let writerStopped = DispatchGroup()
    /// The longest the writer waits for appenders of the last batch to come back.
    private static let maxGatherSeconds = 0.002

    /// fdatasyncs that acknowledged appends since opening, and the records they acknowledged:
    /// their ratio is the group-commit factor.
    public var commitStatistics: (syncs: Int, records: Int) {
        segmentsLock.withLock { (committedSyncs, committedRecords) }
    }

    /// What recovery cut off the newest segment, in bytes (0 when the log was closed cleanly).
    public let recoveredTornBytes: Int

    /// Opens (creating if needed) the partition in `directory`, recovering every segment.
    public init(directory: String, configuration: Configuration = Configuration(), fileSystem: any LogFileSystem = PosixFileSystem()) throws(LogRecoveryError) {
        self.directory = directory
        self.configuration = configuration
        self.fileSystem = fileSystem
        let names: [String]
        do {
            try fileSystem.createDirectory(directory)
            names = try fileSystem.contentsOfDirectory(directory).filter { $0.hasSuffix(".log") }.sorted()
        } catch {
            throw .io(error)
        }
        var segments: [Segment] = []
        var torn = 0
        for (position, name) in names.enumerated() {
            guard let baseOffset = UInt64(name.dropLast(4)), Segment.fileName(baseOffset: baseOffset) == name else { continue }
            let file: any LogFile
            do { file = try fileSystem.openFile("\(directory)/\(name)", create: false) } catch { throw .io(error) }
            let (segment, cut) = try Segment.recover(baseOffset: baseOffset, file: file, isNewest: position == names.count - 1)
            if let previous = segments.last, previous.nextOffset != baseOffset {
                throw .corruptRecord(segment: name, position: 0, expectedOffset: previous.nextOffset, reason: "segment starts at \(baseOffset), the one before ends at \(previous.nextOffset)")
            }
            segments.append(segment)
            torn += cut
        }
        if segments.isEmpty {
            do {
                let file = try fileSystem.openFile("\(directory)/\(Segment.fileName(baseOffset: 0))", create: true)
                try fileSystem.syncDirectory(directory)
                segments.append(Segment.create(baseOffset: 0, file: file))
            } catch {
                throw .io(error)
            }
        }
        self.segments = segments
        self.recoveredTornBytes = torn
        writerStopped.enter()
        let name = "courier-log-\((directory as NSString).lastPathComponent)"
        let thread = Thread { [self] in
            // The kernel's name for the thread (what /proc and perf show); without it the
            // thread keeps the name of the thread that created it.
            try? String(name.prefix(15)).write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8)
            runWriter()
            writerStopped.leave()
        }
        thread.name = name
        thread.start()
    }

    /// The offset the next record will get.
    public var nextOffset: UInt64 {
        segmentsLock.withLock { segments.last!.nextOffset }
    }

    /// The offset after the last durable record: what readers can see.
    public var durableNextOffset: UInt64 {
        segmentsLock.withLock { segments.last!.durableNextOffset }
    }

    /// Returns once a durable record at `offset` exists, when the partition closes, when the
    /// calling task is cancelled or `interruptWaits()` is called; at once if `interrupted()` is
    /// already true. `interrupted` is read under the lock `interruptWaits` takes, so a caller
    /// that sets its own stop flag before calling `interruptWaits()` cannot sleep through it.
    /// No timeout and no timer: an idle consumer costs no wake-ups (a sweep of expired waits
    /// was 20 wake-ups a second of SQLite's thread, loaded or idle).
    public func waitForRecords(at offset: UInt64, unless interrupted: () -> Bool) async {
        let id = waiterIDs.add(1, ordering: .relaxed).newValue
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let waiting: Bool = condition.withLock {
                    // The writer marks records durable before it takes this lock to wake
                    // waiters, and a cancellation sets its flag before its handler takes it,
                    // so a check here cannot miss a wake-up.
                    if stopping || durableNextOffset > offset || Task.isCancelled || interrupted() { return false }
                    waiters[id] = (offset, continuation)
                    return true
                }
                if !waiting { continuation.resume() }
            }
        } onCancel: {
            condition.withLock { waiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }

    /// Readers waiting now (for tests: a wait has begun).
    package var waiterCount: Int { condition.withLock { waiters.count } }

    /// Ends every wait for records now; each waiter looks again at why it waited.
    public func interruptWaits() {
        wakeWaiters(durableNextOffset: 0, all: true)
    }

    /// Wakes the waiters whose record is now durable (or all of them when closing).
    private func wakeWaiters(durableNextOffset end: UInt64, all: Bool = false) {
        let woken: [CheckedContinuation<Void, Never>] = condition.withLock {
            guard !waiters.isEmpty else { return [] }
            let ready = waiters.filter { all || $0.value.offset < end }
            for id in ready.keys { waiters.removeValue(forKey: id) }
            return ready.values.map(\.continuation)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Appends one record; returns its offset once it is on stable storage.
    public func append(_ payload: [UInt8]) async throws(LogAppendError) -> UInt64 {
        guard payload.count <= RecordFrame.maxPayloadSize else {
            throw .writeFailed("record of \(payload.count) bytes is above the \(RecordFrame.maxPayloadSize)-byte limit")
        }
        // Unsafe rather than checked: every path below resumes exactly once, and the check's
        // bookkeeping is measurable at a million appends a second.
        let result = await withUnsafeContinuation { (continuation: Continuation) in
            condition.lock()
            let refusal: LogAppendError? =
                if let failure { failure }
                else if stopping { .closed }
                else if queue.count >= configuration.maxQueuedAppends { .overloaded(retryAfterSeconds: configuration.overloadRetryAfterSeconds) }
                else { nil }
            if refusal == nil {
                queue.append(PendingAppend(payload: payload, continuation: continuation))
                if queue.count == wakeWriterAt { condition.signal() }
            }
            condition.unlock()
            if let refusal { continuation.resume(returning: .failure(refusal)) }
        }
        return try result.get()
    }

    /// Durable records from `offset` on, up to about `maxBytes` (at least one if any), in offset
    /// order. Reads run beside appends: they take the segment list, not the writer's turn.
    public func read(from offset: UInt64, maxBytes: Int) throws(LogReadError) -> [(offset: UInt64, payload: [UInt8])] {
        segmentsLock.lock()
        let first = segments[0].baseOffset
        let closed = isClosed
        let segments = self.segments[(self.segments.lastIndex { $0.baseOffset <= offset } ?? 0)...]
        segmentsLock.unlock()
        guard !closed else { throw .closed }
        guard offset >= first else { throw .belowRetention(requested: offset, firstAvailable: first) }
        var records: [(offset: UInt64, payload: [UInt8])] = []
        var bytes = 0
        do {
            for segment in segments {
                let found = try segment.read(from: max(offset, segment.baseOffset), maxBytes: maxBytes - bytes)
                records += found
                bytes += found.reduce(0) { $0 + $1.payload.count }
                if bytes >= maxBytes || segment.durableNextOffset < segment.nextOffset { break }
            }
        } catch {
            throw .io(error)
        }
        return records
    }

    /// Deletes whole segments whose records all lie below `offset` and whose file was last
    /// written before `cutoff`. The newest segment always stays. Returns how many were deleted.
    func deleteSegments(below offset: UInt64, modifiedBefore cutoff: Date) throws(LogIOError) -> Int {
        segmentsLock.lock()
        defer { segmentsLock.unlock() }
        guard !isClosed else { return 0 }
        var deleted = 0
        while segments.count > 1, segments[0].nextOffset <= offset {
            let path = "\(directory)/\(segments[0].name)"
            guard (fileSystem.modificationDate(path) ?? Date()) < cutoff else { break }
            try fileSystem.deleteFile(path)
            // Dropped, not closed: a reader still holding it finishes, then deinit closes it.
            segments.removeFirst()
            deleted += 1
        }
        if deleted > 0 { try fileSystem.syncDirectory(directory) }
        return deleted
    }

    /// Stops taking appends, lets the writer finish what is queued, and releases the files.
    public func close() {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
        writerStopped.wait()
        interruptWaits()
        segmentsLock.withLock {
            isClosed = true
            segments.removeFirst(segments.count - 1)
        }
    }

    // MARK: - Writer thread

    private func runWriter() {
        let clock = ContinuousClock()
        while let batch = nextBatch() {
            let start = clock.now
            let result = commit(batch.map(\.payload))
            let duration = clock.now - start
            answer(batch, with: result)
            if case .success(let first) = result { wakeWaiters(durableNextOffset: first + UInt64(batch.count)) }
            condition.withLock {
                lastBatchCount = batch.count
                lastCommitDuration = duration
            }
        }
    }

    /// Waits for appends and takes as many as fit one batch; nil once closed and drained.
    ///
    /// Adaptive batching: when the last batch answered more appenders than are queued now, the
    /// writer gives the rest up to one commit's duration to come back, so concurrent appenders
    /// share a sync instead of splitting into alternating halves. With one appender (or after
    /// a lone append) there is nothing to wait for and no added latency.
    private func nextBatch() -> [PendingAppend]? {
        condition.lock()
        defer {
            wakeWriterAt = 0
            condition.unlock()
        }
        wakeWriterAt = 1
        while queue.isEmpty && !stopping { condition.wait() }
        guard !queue.isEmpty else { return nil }
        let gatherTarget = lastBatchCount - lastBatchCount / 8
        if queue.count < gatherTarget && !stopping {
            wakeWriterAt = gatherTarget
            let deadline = Date(timeIntervalSinceNow: min(lastCommitDuration / .seconds(1), Self.maxGatherSeconds))
            while queue.count < gatherTarget && !stopping && condition.wait(until: deadline) {}
        }
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

    /// Writes and syncs one batch, rolling to a new segment first if the current one is full;
    /// returns the first offset.
    private func commit(_ payloads: [[UInt8]]) -> Result<UInt64, LogAppendError> {
        if let failure = condition.withLock({ failure }) { return .failure(failure) }
        var segment = segmentsLock.withLock { segments.last! }
        do {
            if segment.size >= configuration.maxSegmentBytes { segment = try roll(after: segment) }
            let first = try segment.append(payloads)
            try segment.sync()
            segmentsLock.withLock {
                committedSyncs += 1
                committedRecords += payloads.count
            }
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

    private func roll(after segment: Segment) throws(LogIOError) -> Segment {
        // Every batch was synced before it was answered, so the full segment is durable: only
        // the newest segment can ever have a torn tail, which is what recovery relies on. Its
        // zeros written ahead are cut first, so a full segment holds exactly its records.
        try segment.trimToRecords()
        let baseOffset = segment.nextOffset
        let file = try fileSystem.openFile("\(directory)/\(Segment.fileName(baseOffset: baseOffset))", create: true)
        let next = Segment.create(baseOffset: baseOffset, file: file)
        // If this fails, `next` is dropped and its deinit closes the file.
        try fileSystem.syncDirectory(directory)
        segmentsLock.withLock { segments.append(next) }
        return next
    }

    /// Resumes a batch's appenders: record `i` of a successful batch got `firstOffset + i`.
    private func answer(_ appends: [PendingAppend], with result: Result<UInt64, LogAppendError>) {
        for (index, pending) in appends.enumerated() {
            pending.continuation.resume(returning: result.map { $0 + UInt64(index) })
        }
    }

    private func failPartition(_ detail: String) -> LogAppendError {
        let error = LogAppendError.partitionFailed(detail)
        let waiting = condition.withLock {
            failure = error
            defer { queue = [] }
            return queue
        }
        answer(waiting, with: .failure(error))
        FileHandle.standardError.write(Data("courier-log: PARTITION \(directory) STOPPED: \(detail)\n".utf8))
        return error
    }
}
