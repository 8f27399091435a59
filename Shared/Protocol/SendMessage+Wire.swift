internal import SwiftProtobuf

extension SendMessage: ProtoConvertible {
    init(fromProto proto: Courier_V1_SendMessage) throws(WireDecodingError) {
        let check = Self.fields
        self.init(
            clientMessageID: try check.clientMessageID(proto.clientMessageID, "client_message_id"),
            chatID: try check.id(proto.chatID, "chat_id"),
            text: proto.text,
            clientSentAtMs: proto.clientSentAtMs,
            change: proto.hasChange ? try check.nested(proto.change, as: MessageChange.self, "change") : nil
        )
    }

    var proto: Courier_V1_SendMessage {
        .with {
            $0.clientMessageID = clientMessageID
            $0.chatID = chatID
            $0.text = text
            $0.clientSentAtMs = clientSentAtMs
            if let change { $0.change = change.proto }
        }
    }
}

extension SendMessage: WireMessage {
    /// Encodes as `courier.v1.SendMessage`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.SendMessage`; requires `client_message_id` and `chat_id`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
