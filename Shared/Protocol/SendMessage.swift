/// A new message a device sends into a chat; the sender comes from the request's token.
public struct SendMessage: Hashable, Sendable {
    /// Longest client message id the contract allows, in UTF-8 bytes.
    public static let maxClientMessageIDBytes = 128

    /// Id chosen by the sending device, unique per device; the deduplication key (1 to 128 bytes).
    public var clientMessageID: String
    /// Chat the message is sent into.
    public var chatID: UInt64
    /// The message's text.
    public var text: String
    /// When the user sent it, by the device's clock (ms since the Unix epoch).
    public var clientSentAtMs: Int64
    /// Set when this is a change to the chat (edit, delete, rename), not a new message.
    public var change: MessageChange?

    /// Creates a message (or, with `change`, a change) to send.
    public init(clientMessageID: String, chatID: UInt64, text: String, clientSentAtMs: Int64, change: MessageChange? = nil) {
        self.clientMessageID = clientMessageID
        self.chatID = chatID
        self.text = text
        self.clientSentAtMs = clientSentAtMs
        self.change = change
    }
}
