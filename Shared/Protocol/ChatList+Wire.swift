internal import SwiftProtobuf

extension ChatList: ProtoConvertible {
    init(fromProto proto: Courier_V1_ChatList) throws(WireDecodingError) {
        self.init(chats: try Self.fields.list(proto.chats, of: ChatInfo.self, "chats"), more: proto.more)
    }

    var proto: Courier_V1_ChatList {
        .with {
            $0.chats = chats.map(\.proto)
            $0.more = more
        }
    }
}

extension ChatList: WireMessage {
    /// Encodes as `courier.v1.ChatList`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.ChatList`; every chat must be valid.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
