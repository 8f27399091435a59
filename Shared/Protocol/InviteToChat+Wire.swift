internal import SwiftProtobuf

extension InviteToChat: ProtoConvertible {
    init(fromProto proto: Courier_V1_InviteToChat) throws(WireDecodingError) {
        let check = Self.fields
        self.init(chatID: try check.id(proto.chatID, "chat_id"), userName: try check.name(proto.userName, "user_name"))
    }

    var proto: Courier_V1_InviteToChat {
        .with {
            $0.chatID = chatID
            $0.userName = userName
        }
    }
}

extension InviteToChat: WireMessage {
    /// Encodes as `courier.v1.InviteToChat`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.InviteToChat`; requires `chat_id`, and a `user_name` that keeps `NameRule`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
