internal import SwiftProtobuf

extension SearchResponse: ProtoConvertible {
    init(fromProto proto: Courier_V1_SearchResponse) throws(WireDecodingError) {
        self.init(hits: try Self.fields.list(proto.hits, of: SearchHit.self, "hits"))
    }

    var proto: Courier_V1_SearchResponse {
        .with { $0.hits = hits.map(\.proto) }
    }
}

extension SearchResponse: WireMessage {
    /// Encodes as `courier.v1.SearchResponse`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.SearchResponse`; every hit must be valid.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
