internal import SwiftProtobuf

extension LeaveChat: ProtoConvertible {
    init(fromProto proto: Courier_V1_LeaveChat) throws(WireDecodingError) {
        self.init(chatID: try Self.fields.id(proto.chatID, "chat_id"))
    }

    var proto: Courier_V1_LeaveChat {
        .with { $0.chatID = chatID }
    }
}

extension LeaveChat: WireMessage {
    /// Encodes as `courier.v1.LeaveChat`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.LeaveChat`; requires `chat_id`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
