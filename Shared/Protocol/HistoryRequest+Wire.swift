internal import SwiftProtobuf

extension HistoryRequest: ProtoConvertible {
    init(fromProto proto: Courier_V1_HistoryRequest) throws(WireDecodingError) {
        self.init(chatID: try Self.fields.id(proto.chatID, "chat_id"), beforeSequence: proto.beforeSequence, limit: proto.limit)
    }

    var proto: Courier_V1_HistoryRequest {
        .with {
            $0.chatID = chatID
            $0.beforeSequence = beforeSequence
            $0.limit = limit
        }
    }
}

extension HistoryRequest: WireMessage {
    /// Encodes as `courier.v1.HistoryRequest`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.HistoryRequest`; requires `chat_id`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
