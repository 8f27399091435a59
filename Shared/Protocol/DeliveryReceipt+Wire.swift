internal import SwiftProtobuf

extension DeliveryReceipt: ProtoConvertible {
    init(fromProto proto: Courier_V1_DeliveryReceipt) throws(WireDecodingError) {
        let check = Self.fields
        self.init(
            chatID: try check.id(proto.chatID, "chat_id"),
            chatSequence: try check.id(proto.chatSequence, "chat_sequence"),
            serverMessageID: try check.id(proto.serverMessageID, "server_message_id"),
            clientMessageID: try check.clientMessageID(proto.clientMessageID, "client_message_id")
        )
    }

    var proto: Courier_V1_DeliveryReceipt {
        .with {
            $0.chatID = chatID
            $0.chatSequence = chatSequence
            $0.serverMessageID = serverMessageID
            $0.clientMessageID = clientMessageID
        }
    }
}

extension DeliveryReceipt: WireMessage {
    /// Encodes as `courier.v1.DeliveryReceipt`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.DeliveryReceipt`; requires every field.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
