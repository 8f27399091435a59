internal import SwiftProtobuf

extension Presence: ProtoConvertible {
    init(fromProto proto: Courier_V1_Presence) throws(WireDecodingError) {
        let check = Self.fields
        guard proto.onlineUserIds.count + proto.offlineUserIds.count <= Self.maxUsers else {
            throw .invalidField(type: check.type, field: "online_user_ids", reason: "more than \(Self.maxUsers) users in one frame")
        }
        for id in proto.onlineUserIds { _ = try check.id(id, "online_user_ids") }
        for id in proto.offlineUserIds { _ = try check.id(id, "offline_user_ids") }
        self.init(onlineUserIDs: proto.onlineUserIds, offlineUserIDs: proto.offlineUserIds)
    }

    var proto: Courier_V1_Presence {
        .with {
            $0.onlineUserIds = onlineUserIDs
            $0.offlineUserIds = offlineUserIDs
        }
    }
}

extension Presence: WireMessage {
    /// Encodes as `courier.v1.Presence`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.Presence`; at most 1,000 user ids, none 0.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
