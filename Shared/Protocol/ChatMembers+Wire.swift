internal import SwiftProtobuf

extension ChatMembersRequest: ProtoConvertible {
    init(fromProto proto: Courier_V1_ChatMembersRequest) throws(WireDecodingError) {
        self.init(chatID: try Self.fields.id(proto.chatID, "chat_id"))
    }

    var proto: Courier_V1_ChatMembersRequest {
        .with { $0.chatID = chatID }
    }
}

extension ChatMembersRequest: WireMessage {
    /// Encodes as `courier.v1.ChatMembersRequest`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.ChatMembersRequest`; requires `chat_id`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}

extension ChatMember: ProtoConvertible {
    init(fromProto proto: Courier_V1_ChatMember) throws(WireDecodingError) {
        let check = Self.fields
        self.init(userID: try check.id(proto.userID, "user_id"), name: try check.name(proto.name, "name"), online: proto.online)
    }

    var proto: Courier_V1_ChatMember {
        .with {
            $0.userID = userID
            $0.name = name
            $0.online = online
        }
    }
}

extension ChatMembers: ProtoConvertible {
    init(fromProto proto: Courier_V1_ChatMembers) throws(WireDecodingError) {
        let check = Self.fields
        guard proto.members.count <= Self.maxMembers else { throw .invalidField(type: check.type, field: "members", reason: "more than \(Self.maxMembers) members") }
        self.init(chatID: try check.id(proto.chatID, "chat_id"), members: try check.list(proto.members, of: ChatMember.self, "members"), more: proto.more)
    }

    var proto: Courier_V1_ChatMembers {
        .with {
            $0.chatID = chatID
            $0.members = members.map(\.proto)
            $0.more = more
        }
    }
}

extension ChatMembers: WireMessage {
    /// Encodes as `courier.v1.ChatMembers`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.ChatMembers`; at most 1,000 members, each with an id and a valid name.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
