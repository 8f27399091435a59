/// Why a log cannot be opened as it is on disk. Never resolved by dropping data silently.
public enum LogRecoveryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An invalid record with valid data after it, or in a segment that is not the newest.
    case corruptRecord(segment: String, position: Int, expectedOffset: UInt64, reason: String)
    case io(LogIOError)

    public var description: String {
        switch self {
        case .corruptRecord(let segment, let position, let expectedOffset, let reason):
            "corrupt record in \(segment) at byte \(position) (offset \(expectedOffset)): \(reason); refusing to truncate acknowledged data"
        case .io(let error):
            "\(error)"
        }
    }
}
