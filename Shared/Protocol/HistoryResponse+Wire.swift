internal import SwiftProtobuf

extension HistoryResponse: ProtoConvertible {
    init(fromProto proto: Courier_V1_HistoryResponse) throws(WireDecodingError) {
        self.init(messages: try Self.fields.list(proto.messages, of: ChatMessage.self, "messages"), more: proto.more)
    }

    var proto: Courier_V1_HistoryResponse {
        .with {
            $0.messages = messages.map(\.proto)
            $0.more = more
        }
    }
}

extension HistoryResponse: WireMessage {
    /// Encodes as `courier.v1.HistoryResponse`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.HistoryResponse`; every message must be valid.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
