internal import SwiftProtobuf

extension ChatInfo: ProtoConvertible {
    init(fromProto proto: Courier_V1_ChatInfo) throws(WireDecodingError) {
        let check = Self.fields
        self.init(
            chatID: try check.id(proto.chatID, "chat_id"),
            name: try check.required(proto.name, "name"),
            lastSequence: proto.lastSequence,
            memberNames: proto.memberNames,
            memberCount: proto.memberCount,
            title: proto.title
        )
    }

    var proto: Courier_V1_ChatInfo {
        .with {
            $0.chatID = chatID
            $0.name = name
            $0.lastSequence = lastSequence
            $0.memberNames = memberNames
            $0.memberCount = memberCount
            $0.title = title
        }
    }
}

extension ChatInfo: WireMessage {
    /// Encodes as `courier.v1.ChatInfo`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.ChatInfo`; requires `chat_id` and `name`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
