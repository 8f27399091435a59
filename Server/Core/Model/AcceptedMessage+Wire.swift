import CourierProtocol
internal import SwiftProtobuf

extension AcceptedMessage: WireMessage {
    /// Encodes as `courier.v1.AcceptedMessage`.
    public func serializedBytes() -> [UInt8] {
        ProtobufWire.encode(proto, schemaName: Self.schemaName)
    }

    /// Decodes a `courier.v1.AcceptedMessage`; requires every id and `client_message_id`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        let proto = try ProtobufWire.decode(Courier_V1_AcceptedMessage.self, bytes, schemaName: Self.schemaName)
        let check = FieldCheck(type: Self.schemaName)
        self.init(
            serverMessageID: try check.id(proto.serverMessageID, "server_message_id"),
            chatID: try check.id(proto.chatID, "chat_id"),
            senderUserID: try check.id(proto.senderUserID, "sender_user_id"),
            senderDeviceID: try check.id(proto.senderDeviceID, "sender_device_id"),
            clientMessageID: try check.clientMessageID(proto.clientMessageID, "client_message_id"),
            text: proto.text,
            clientSentAtMs: proto.clientSentAtMs,
            acceptedAtMs: proto.acceptedAtMs,
            change: try MessageChange(record: proto.changeKind, sequence: proto.changeSequence)
        )
    }

    private static let schemaName = "AcceptedMessage"

    private var proto: Courier_V1_AcceptedMessage {
        .with {
            $0.serverMessageID = serverMessageID
            $0.chatID = chatID
            $0.senderUserID = senderUserID
            $0.senderDeviceID = senderDeviceID
            $0.clientMessageID = clientMessageID
            $0.text = text
            $0.clientSentAtMs = clientSentAtMs
            $0.acceptedAtMs = acceptedAtMs
            $0.changeKind = change?.kind ?? 0
            $0.changeSequence = change?.sequence ?? 0
        }
    }
}
