/// A message stored in a chat's history, as member devices see it.
public struct ChatMessage: Hashable, Sendable {
    /// Id the server gave the message.
    public var serverMessageID: UInt64
    /// Chat the message belongs to.
    public var chatID: UInt64
    /// Position in the chat: consecutive from 1, no gaps.
    public var chatSequence: UInt64
    /// User who sent it.
    public var senderUserID: UInt64
    /// Device it was sent from.
    public var senderDeviceID: UInt64
    /// The id the sending device chose; matches the sender's outbox entry.
    public var clientMessageID: String
    /// The message's text.
    public var text: String
    /// When the user sent it, by the sending device's clock (ms since the Unix epoch).
    public var clientSentAtMs: Int64
    /// When the server accepted it, by the server's clock (ms since the Unix epoch).
    public var acceptedAtMs: Int64
    /// Set when this entry is a change to the chat (edit, delete, rename), not a message.
    public var change: MessageChange?
    /// When the message was last edited (ms since the Unix epoch), 0 if never.
    public var editedAtMs: Int64
    /// The message was deleted (its text is empty).
    public var deleted: Bool

    /// Creates a stored message.
    public init(
        serverMessageID: UInt64,
        chatID: UInt64,
        chatSequence: UInt64,
        senderUserID: UInt64,
        senderDeviceID: UInt64,
        clientMessageID: String,
        text: String,
        clientSentAtMs: Int64,
        acceptedAtMs: Int64,
        change: MessageChange? = nil,
        editedAtMs: Int64 = 0,
        deleted: Bool = false
    ) {
        self.serverMessageID = serverMessageID
        self.chatID = chatID
        self.chatSequence = chatSequence
        self.senderUserID = senderUserID
        self.senderDeviceID = senderDeviceID
        self.clientMessageID = clientMessageID
        self.text = text
        self.clientSentAtMs = clientSentAtMs
        self.acceptedAtMs = acceptedAtMs
        self.change = change
        self.editedAtMs = editedAtMs
        self.deleted = deleted
    }
}
