import CourierProtocol

/// Server-internal: a message as the gateway appends it to the durable log, before its chat
/// numbers it (see accepted.proto).
public struct AcceptedMessage: Hashable, Sendable {
    public var serverMessageID: UInt64
    public var chatID: UInt64
    public var senderUserID: UInt64
    public var senderDeviceID: UInt64
    public var clientMessageID: String
    public var text: String
    public var clientSentAtMs: Int64
    public var acceptedAtMs: Int64
    /// The change this record makes, if it is one (not a new message).
    public var change: MessageChange?

    public init(serverMessageID: UInt64, chatID: UInt64, senderUserID: UInt64, senderDeviceID: UInt64, clientMessageID: String, text: String, clientSentAtMs: Int64, acceptedAtMs: Int64, change: MessageChange? = nil) {
        self.change = change
        self.serverMessageID = serverMessageID
        self.chatID = chatID
        self.senderUserID = senderUserID
        self.senderDeviceID = senderDeviceID
        self.clientMessageID = clientMessageID
        self.text = text
        self.clientSentAtMs = clientSentAtMs
        self.acceptedAtMs = acceptedAtMs
    }
}
