internal import SwiftProtobuf

extension SyncResponse: ProtoConvertible {
    init(fromProto proto: Courier_V1_SyncResponse) throws(WireDecodingError) {
        self.init(
            messages: try Self.fields.list(proto.messages, of: ChatMessage.self, "messages"),
            more: proto.more
        )
    }

    var proto: Courier_V1_SyncResponse {
        .with {
            $0.messages = messages.map(\.proto)
            $0.more = more
        }
    }
}

extension SyncResponse: WireMessage {
    /// Encodes as `courier.v1.SyncResponse`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.SyncResponse`; every message must be valid.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
