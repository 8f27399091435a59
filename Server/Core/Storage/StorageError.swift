/// Why a storage call failed. Each case says whether trying again can help.
public enum StorageError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The named user, device or chat does not exist.
    case notFound(String)
    /// A user, device or chat of that name exists already.
    case alreadyExists(String)
    /// The request itself is invalid (empty name, bad search words); trying again cannot help.
    case invalid(String)
    /// The chat's stored sequence is not what its writer expected: another writer stored in
    /// between. The writer must reload its state; it is no longer the only one.
    case sequenceConflict(chatID: UInt64, expected: UInt64, found: UInt64)
    /// The database refuses the change as it is (a constraint); trying again cannot help.
    case rejected(String)
    /// The disk is full; nothing was changed.
    case full(String)
    /// The database failed or is busy; nothing was changed, trying again later may help.
    case unavailable(String)

    public var description: String {
        switch self {
        case .notFound(let what): "not found: \(what)"
        case .alreadyExists(let what): "already exists: \(what)"
        case .invalid(let why): "invalid: \(why)"
        case .sequenceConflict(let chat, let expected, let found):
            "chat \(chat): expected last sequence \(expected), storage has \(found)"
        case .rejected(let detail): "storage refused the change: \(detail)"
        case .full(let detail): "storage full: \(detail)"
        case .unavailable(let detail): "storage unavailable: \(detail)"
        }
    }
}
