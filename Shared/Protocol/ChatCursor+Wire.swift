internal import SwiftProtobuf

extension ChatCursor: ProtoConvertible {
    init(fromProto proto: Courier_V1_ChatCursor) throws(WireDecodingError) {
        self.init(chatID: try Self.fields.id(proto.chatID, "chat_id"), sequence: proto.sequence)
    }

    var proto: Courier_V1_ChatCursor {
        .with {
            $0.chatID = chatID
            $0.sequence = sequence
        }
    }
}

extension ChatCursor: WireMessage {
    /// Encodes as `courier.v1.ChatCursor`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.ChatCursor`; requires `chat_id`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
