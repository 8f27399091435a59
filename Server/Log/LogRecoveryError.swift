/// Why a log cannot be opened as it is on disk. Never resolved by dropping data silently.
public enum LogRecoveryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An invalid record with valid data after it, or in a segment that is not the newest.
    case corruptRecord(segment: String, position: Int, expectedOffset: UInt64, reason: String)
    case io(LogIOError)
    /// The log was asked to open with another partition count or range size than its
    /// directory was created with; no record was added, moved or dropped.
    case layoutChanged(directory: String, recorded: String, requested: String)
    /// The file that records the partition layout cannot be read or is damaged.
    case layoutUnreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case .corruptRecord(let segment, let position, let expectedOffset, let reason):
            "corrupt record in \(segment) at byte \(position) (offset \(expectedOffset)): \(reason); refusing to truncate acknowledged data"
        case .io(let error):
            "\(error)"
        case .layoutChanged(let directory, let recorded, let requested):
            "the log in \(directory) holds \(recorded) and cannot be opened with \(requested): senders are routed by that layout, so another would leave records unread and split chats over partitions; open it with the layout it has (leave the server's `partitions` setting, COURIER_PARTITIONS, unset, or set it to that count)"
        case .layoutUnreadable(let path, let reason):
            "the log's partition layout \(path) cannot be used: \(reason); it records how senders are routed to partitions, so the log is not opened (restore the file, or remove it to have the layout judged from the partitions' directories)"
        }
    }
}
