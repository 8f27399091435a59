internal import SwiftProtobuf

extension SearchRequest: ProtoConvertible {
    init(fromProto proto: Courier_V1_SearchRequest) throws(WireDecodingError) {
        self.init(words: try Self.fields.required(proto.words, "words"), chatID: proto.chatID, limit: proto.limit)
    }

    var proto: Courier_V1_SearchRequest {
        .with {
            $0.words = words
            $0.chatID = chatID
            $0.limit = limit
        }
    }
}

extension SearchRequest: WireMessage {
    /// Encodes as `courier.v1.SearchRequest`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.SearchRequest`; requires `words`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
