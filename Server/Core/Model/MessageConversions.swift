import CourierProtocol

extension StoredMessage {
    /// A message the gateway accepted, before its chat numbers it (`sequence` 0).
    package init(_ message: AcceptedMessage) {
        self.init(
            serverMessageID: message.serverMessageID, chatID: message.chatID, sequence: 0,
            senderUserID: message.senderUserID, senderDeviceID: message.senderDeviceID,
            clientMessageID: message.clientMessageID, text: message.text,
            clientSentAtMilliseconds: message.clientSentAtMs, acceptedAtMilliseconds: message.acceptedAtMs,
            change: message.change
        )
    }
}

extension ChatMessage {
    /// A stored message as devices see it.
    package init(_ message: StoredMessage) {
        self.init(
            serverMessageID: message.serverMessageID, chatID: message.chatID, chatSequence: message.sequence,
            senderUserID: message.senderUserID, senderDeviceID: message.senderDeviceID,
            clientMessageID: message.clientMessageID, text: message.text,
            clientSentAtMs: message.clientSentAtMilliseconds, acceptedAtMs: message.acceptedAtMilliseconds,
            change: message.change, editedAtMs: message.editedAtMilliseconds, deleted: message.deleted
        )
    }
}
