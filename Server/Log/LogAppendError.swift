/// Why an append was not acknowledged. None of these is ever an acknowledgement.
public enum LogAppendError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The append queue is at its bound; try again after `retryAfterSeconds` (the gateway's 5.03).
    case overloaded(retryAfterSeconds: UInt32)
    /// The disk is full; the log stays consistent and takes appends again once there is room.
    case diskFull(String)
    /// A write failed for another reason; nothing of this batch was acknowledged.
    case writeFailed(String)
    /// fdatasync failed: the kernel may have dropped the pages, so the partition takes no more
    /// appends until it is reopened (retrying the sync could falsely report success).
    case partitionFailed(String)
    case closed

    public var description: String {
        switch self {
        case .overloaded(let seconds): "log append queue full; retry in \(seconds) s"
        case .diskFull(let detail): "disk full: \(detail)"
        case .writeFailed(let detail): "write failed: \(detail)"
        case .partitionFailed(let detail): "partition stopped after a failed sync: \(detail)"
        case .closed: "the log is closed"
        }
    }
}
