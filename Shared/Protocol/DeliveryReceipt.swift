/// Tells the sending device that its message was delivered: every device of every other member
/// of the chat has acknowledged it.
public struct DeliveryReceipt: Hashable, Sendable {
    /// Chat the message belongs to.
    public var chatID: UInt64
    /// The message's sequence in the chat (never 0).
    public var chatSequence: UInt64
    /// Id the server gave the message.
    public var serverMessageID: UInt64
    /// The id the sending device chose for the message.
    public var clientMessageID: String

    /// Creates a receipt.
    public init(chatID: UInt64, chatSequence: UInt64, serverMessageID: UInt64, clientMessageID: String) {
        self.chatID = chatID
        self.chatSequence = chatSequence
        self.serverMessageID = serverMessageID
        self.clientMessageID = clientMessageID
    }
}
