/// Why records could not be read.
public enum LogReadError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The records asked for were deleted by retention; the partition now starts at `firstAvailable`.
    case belowRetention(requested: UInt64, firstAvailable: UInt64)
    case closed
    case io(LogIOError)

    public var description: String {
        switch self {
        case .belowRetention(let requested, let first):
            "offset \(requested) was deleted by retention; the partition starts at \(first)"
        case .closed: "the log is closed"
        case .io(let error): "\(error)"
        }
    }
}
