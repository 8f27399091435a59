internal import SwiftProtobuf

extension Push: ProtoConvertible {
    init(fromProto proto: Courier_V1_Push) throws(WireDecodingError) {
        let check = Self.fields
        switch try check.oneof(proto.kind, "kind") {
        case .message(let message):
            self = .message(try check.nested(message, as: ChatMessage.self, "message"))
        case .delivered(let receipt):
            self = .delivered(try check.nested(receipt, as: DeliveryReceipt.self, "delivered"))
        case .presence(let presence):
            self = .presence(try check.nested(presence, as: Presence.self, "presence"))
        }
    }

    var proto: Courier_V1_Push {
        .with {
            switch self {
            case .message(let message): $0.message = message.proto
            case .delivered(let receipt): $0.delivered = receipt.proto
            case .presence(let presence): $0.presence = presence.proto
            }
        }
    }
}

extension Push: WireMessage {
    /// Encodes as `courier.v1.Push`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.Push`; requires one case of `kind`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
