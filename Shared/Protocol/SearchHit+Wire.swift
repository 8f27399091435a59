internal import SwiftProtobuf

extension SearchHit: ProtoConvertible {
    init(fromProto proto: Courier_V1_SearchHit) throws(WireDecodingError) {
        let check = Self.fields
        self.init(
            message: try check.nested(try check.present(proto.hasMessage ? proto.message : nil, "message"), as: ChatMessage.self, "message"),
            chatName: proto.chatName,
            senderName: proto.senderName,
            snippet: proto.snippet
        )
    }

    var proto: Courier_V1_SearchHit {
        .with {
            $0.message = message.proto
            $0.chatName = chatName
            $0.senderName = senderName
            $0.snippet = snippet
        }
    }
}

extension SearchHit: WireMessage {
    /// Encodes as `courier.v1.SearchHit`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.SearchHit`; requires a valid `message`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
