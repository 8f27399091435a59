internal import SwiftProtobuf

extension SendResult: ProtoConvertible {
    init(fromProto proto: Courier_V1_SendResult) throws(WireDecodingError) {
        let check = Self.fields
        self.init(
            clientMessageID: try check.clientMessageID(proto.clientMessageID, "client_message_id"),
            serverMessageID: try check.id(proto.serverMessageID, "server_message_id"),
            chatID: try check.id(proto.chatID, "chat_id"),
            chatSequence: proto.chatSequence,
            acceptedAtMs: proto.acceptedAtMs
        )
    }

    var proto: Courier_V1_SendResult {
        .with {
            $0.clientMessageID = clientMessageID
            $0.serverMessageID = serverMessageID
            $0.chatID = chatID
            $0.chatSequence = chatSequence
            $0.acceptedAtMs = acceptedAtMs
        }
    }
}

extension SendResult: WireMessage {
    /// Encodes as `courier.v1.SendResult`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.SendResult`; requires `client_message_id`, `server_message_id`, `chat_id`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
