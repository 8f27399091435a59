/// One message that matches a search, with where it was said and by whom.
public struct SearchHit: Hashable, Sendable {
    /// The message.
    public var message: ChatMessage
    /// The name of the message's chat.
    public var chatName: String
    /// The name of the user who sent it.
    public var senderName: String
    /// The matching words marked with [ ], with some context; "…" where the text is cut.
    public var snippet: String

    /// Creates a search hit.
    public init(message: ChatMessage, chatName: String, senderName: String, snippet: String) {
        self.message = message
        self.chatName = chatName
        self.senderName = senderName
        self.snippet = snippet
    }
}
