internal import SwiftProtobuf

extension PushAck: ProtoConvertible {
    init(fromProto proto: Courier_V1_PushAck) throws(WireDecodingError) {
        self.init(cursors: try Self.fields.list(proto.cursors, of: ChatCursor.self, "cursors"))
    }

    var proto: Courier_V1_PushAck {
        .with { $0.cursors = cursors.map(\.proto) }
    }
}

extension PushAck: WireMessage {
    /// Encodes as `courier.v1.PushAck`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.PushAck`; requires `chat_id` in every cursor.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
