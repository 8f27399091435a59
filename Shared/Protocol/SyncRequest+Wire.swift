internal import SwiftProtobuf

extension SyncRequest: ProtoConvertible {
    init(fromProto proto: Courier_V1_SyncRequest) throws(WireDecodingError) {
        self.init(have: try Self.fields.list(proto.have, of: ChatCursor.self, "have"), limit: proto.limit)
    }

    var proto: Courier_V1_SyncRequest {
        .with {
            $0.have = have.map(\.proto)
            $0.limit = limit
        }
    }
}

extension SyncRequest: WireMessage {
    /// Encodes as `courier.v1.SyncRequest`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.SyncRequest`; requires `chat_id` in every cursor.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
