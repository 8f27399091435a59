internal import SwiftProtobuf

extension ChatMessage: ProtoConvertible {
    init(fromProto proto: Courier_V1_ChatMessage) throws(WireDecodingError) {
        let check = Self.fields
        self.init(
            serverMessageID: try check.id(proto.serverMessageID, "server_message_id"),
            chatID: try check.id(proto.chatID, "chat_id"),
            chatSequence: try check.id(proto.chatSequence, "chat_sequence"),
            senderUserID: try check.id(proto.senderUserID, "sender_user_id"),
            senderDeviceID: try check.id(proto.senderDeviceID, "sender_device_id"),
            clientMessageID: try check.clientMessageID(proto.clientMessageID, "client_message_id"),
            text: proto.text,
            clientSentAtMs: proto.clientSentAtMs,
            acceptedAtMs: proto.acceptedAtMs,
            change: proto.hasChange ? try check.nested(proto.change, as: MessageChange.self, "change") : nil,
            editedAtMs: proto.editedAtMs,
            deleted: proto.deleted
        )
    }

    var proto: Courier_V1_ChatMessage {
        .with {
            $0.serverMessageID = serverMessageID
            $0.chatID = chatID
            $0.chatSequence = chatSequence
            $0.senderUserID = senderUserID
            $0.senderDeviceID = senderDeviceID
            $0.clientMessageID = clientMessageID
            $0.text = text
            $0.clientSentAtMs = clientSentAtMs
            $0.acceptedAtMs = acceptedAtMs
            if let change { $0.change = change.proto }
            $0.editedAtMs = editedAtMs
            $0.deleted = deleted
        }
    }
}

extension ChatMessage: WireMessage {
    /// Encodes as `courier.v1.ChatMessage`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.ChatMessage`; requires every id, a nonzero sequence and `client_message_id`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
