/// Asks for a page of a chat's history: the newest messages below a sequence.
public struct HistoryRequest: Hashable, Sendable {
    /// Messages per page when the request names no limit, and the most it may ask for.
    public static let defaultLimit: UInt32 = 50
    public static let maxLimit: UInt32 = 500

    /// The chat; the user must be a member.
    public var chatID: UInt64
    /// The page ends right below this sequence; 0 means with the newest message.
    public var beforeSequence: UInt64
    /// Most messages wanted; 0 lets the server choose (`defaultLimit`), above `maxLimit` counts as it.
    public var limit: UInt32

    /// Creates a history request.
    public init(chatID: UInt64, beforeSequence: UInt64 = 0, limit: UInt32 = 0) {
        self.chatID = chatID
        self.beforeSequence = beforeSequence
        self.limit = limit
    }
}
