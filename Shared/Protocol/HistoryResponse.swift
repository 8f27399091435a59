/// A page of a chat's history: consecutive messages in ascending sequence order.
public struct HistoryResponse: Hashable, Sendable {
    /// The page, oldest first, ending right below the requested sequence (or with the newest).
    public var messages: [ChatMessage]
    /// True when older messages exist than the first one here.
    public var more: Bool

    /// Creates a history page.
    public init(messages: [ChatMessage], more: Bool) {
        self.messages = messages
        self.more = more
    }
}
