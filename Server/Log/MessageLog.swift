/// One record read back from the log.
public struct LogRecord: Sendable, Equatable {
    public var offset: UInt64
    public var payload: [UInt8]

    public init(offset: UInt64, payload: [UInt8]) {
        self.offset = offset
        self.payload = payload
    }
}

/// What the rest of the server needs from the durable log: append, read from an offset, and
/// commit a consumer group's offset. The embedded log implements it on segment files; cluster
/// mode will put a PostgreSQL-backed log behind the same protocol.
public protocol MessageLog: Sendable {
    var partitionCount: Int { get }
    /// The partition of a sender: one sender's messages always land in one partition, in order.
    func partition(forUser userID: UInt64) -> Int
    /// Returns the record's offset once it is on stable storage.
    func append(_ payload: [UInt8], partition: Int) async throws(LogAppendError) -> UInt64
    /// Durable records from `offset` on, up to about `maxBytes` (at least one if any).
    func read(partition: Int, from offset: UInt64, maxBytes: Int) async throws(LogReadError) -> [LogRecord]
    /// The offset after the last durable record of `partition`.
    func durableNextOffset(partition: Int) async -> UInt64
    /// Returns once a record at `offset` is readable in `partition`, when the log closes, when
    /// the calling task is cancelled, or when `interruptWaits()` is called; at once if
    /// `interrupted()` is already true. There is no timeout: a consumer that stops sets its
    /// flag, which `interrupted` reads, and then calls `interruptWaits()`; the log reads the
    /// flag under the lock the interruption takes, so the stop is not lost between the
    /// consumer's check and its wait.
    func waitForRecords(partition: Int, at offset: UInt64, unless interrupted: () -> Bool) async
    /// Ends every wait for records now; each waiter looks again at why it waited.
    func interruptWaits()
    /// Where `group` resumes in `partition`.
    func committedOffset(group: String, partition: Int) async throws(LogIOError) -> UInt64
    /// Durably moves `group`'s resume points forward, one per partition, all in one write.
    func commit(group: String, offsets: [Int: UInt64]) async throws(LogIOError)
}
