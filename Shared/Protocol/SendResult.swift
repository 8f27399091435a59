/// The gateway's answer to a `SendMessage`: the message is durable and the device may forget it.
public struct SendResult: Hashable, Sendable {
    /// The client message id of the message this answers.
    public var clientMessageID: String
    /// Id the server gave the message; the same for every retry.
    public var serverMessageID: UInt64
    /// Chat the message was sent into.
    public var chatID: UInt64
    /// The message's sequence in its chat, or 0 while the chat's writer has not numbered it yet.
    public var chatSequence: UInt64
    /// When the server durably accepted it, by the server's clock (ms since the Unix epoch).
    public var acceptedAtMs: Int64

    /// Creates a send result.
    public init(
        clientMessageID: String,
        serverMessageID: UInt64,
        chatID: UInt64,
        chatSequence: UInt64 = 0,
        acceptedAtMs: Int64
    ) {
        self.clientMessageID = clientMessageID
        self.serverMessageID = serverMessageID
        self.chatID = chatID
        self.chatSequence = chatSequence
        self.acceptedAtMs = acceptedAtMs
    }
}
