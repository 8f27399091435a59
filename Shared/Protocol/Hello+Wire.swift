internal import SwiftProtobuf

extension Hello: ProtoConvertible {
    init(fromProto proto: Courier_V1_Hello) throws(WireDecodingError) {
        self.init(
            token: proto.token,
            have: try Self.fields.list(proto.have, of: ChatCursor.self, "have"),
            clientName: proto.clientName
        )
    }

    var proto: Courier_V1_Hello {
        .with {
            $0.token = token
            $0.have = have.map(\.proto)
            $0.clientName = clientName
        }
    }
}

extension Hello: WireMessage {
    /// Encodes as `courier.v1.Hello`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.Hello`; requires `chat_id` in every cursor (the token may be empty).
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
