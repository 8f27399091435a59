import CourierLog
import Foundation
import Synchronization

/// The log the consumers read through when test faults are on: at the configured offset
/// commit the process dies at once, as `kill -9` would, with the batch stored and pushed but its
/// offset not moved, so the restarted server replays it.
public final class FaultyLog: MessageLog {
    private let inner: any MessageLog
    private let crashBeforeCommit: Int
    private let commits = Mutex(0)

    public init(wrapping inner: any MessageLog, crashBeforeCommit: Int) {
        self.inner = inner
        self.crashBeforeCommit = crashBeforeCommit
    }

    public var partitionCount: Int { inner.partitionCount }

    public func partition(forUser userID: UInt64) -> Int { inner.partition(forUser: userID) }

    public func append(_ payload: [UInt8], partition: Int) async throws(LogAppendError) -> UInt64 {
        try await inner.append(payload, partition: partition)
    }

    public func read(partition: Int, from offset: UInt64, maxBytes: Int) async throws(LogReadError) -> [LogRecord] {
        try await inner.read(partition: partition, from: offset, maxBytes: maxBytes)
    }

    public func durableNextOffset(partition: Int) async -> UInt64 { await inner.durableNextOffset(partition: partition) }

    public func waitForRecords(partition: Int, at offset: UInt64, unless interrupted: () -> Bool) async {
        await inner.waitForRecords(partition: partition, at: offset, unless: interrupted)
    }

    public func interruptWaits() { inner.interruptWaits() }

    public func committedOffset(group: String, partition: Int) async throws(LogIOError) -> UInt64 {
        try await inner.committedOffset(group: group, partition: partition)
    }

    /// Counts each partition's offset as one commit, as when every partition committed alone.
    public func commit(group: String, offsets: [Int: UInt64]) async throws(LogIOError) {
        let (before, after) = commits.withLock { count in
            defer { count += offsets.count }
            return (count, count + offsets.count)
        }
        if before < crashBeforeCommit && crashBeforeCommit <= after {
            FileHandle.standardError.write(Data("TEST FAULT: killed before offset commit \(crashBeforeCommit)\n".utf8))
            kill(getpid(), SIGKILL)
        }
        try await inner.commit(group: group, offsets: offsets)
    }
}
