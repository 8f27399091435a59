/// Searches the history of the user's chats for messages holding every word.
public struct SearchRequest: Hashable, Sendable {
    /// Hits per answer when the request names no limit, and the most it may ask for.
    public static let defaultLimit: UInt32 = 20
    public static let maxLimit: UInt32 = 100

    /// The words, separated by whitespace (at most 32 words and 1024 bytes).
    public var words: String
    /// Only this chat (one of the user's); 0 searches every chat of the user.
    public var chatID: UInt64
    /// Most hits wanted; 0 lets the server choose (`defaultLimit`), above `maxLimit` counts as it.
    public var limit: UInt32

    /// Creates a search request.
    public init(words: String, chatID: UInt64 = 0, limit: UInt32 = 0) {
        self.words = words
        self.chatID = chatID
        self.limit = limit
    }
}
