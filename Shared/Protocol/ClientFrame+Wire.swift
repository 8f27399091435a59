internal import SwiftProtobuf

extension ClientFrame: ProtoConvertible {
    init(fromProto proto: Courier_V1_ClientFrame) throws(WireDecodingError) {
        let check = Self.fields
        switch try check.oneof(proto.frame, "frame") {
        case .hello(let hello): self = .hello(try check.nested(hello, as: Hello.self, "hello"))
        case .ack(let ack): self = .ack(try check.nested(ack, as: PushAck.self, "ack"))
        case .heartbeat(let beat): self = .heartbeat(try check.nested(beat, as: Heartbeat.self, "heartbeat"))
        case .sync(let sync): self = .sync(try check.nested(sync, as: SyncRequest.self, "sync"))
        }
    }

    var proto: Courier_V1_ClientFrame {
        .with {
            switch self {
            case .hello(let hello): $0.hello = hello.proto
            case .ack(let ack): $0.ack = ack.proto
            case .heartbeat(let beat): $0.heartbeat = beat.proto
            case .sync(let sync): $0.sync = sync.proto
            }
        }
    }
}

extension ClientFrame: WireMessage {
    /// Encodes as `courier.v1.ClientFrame`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.ClientFrame`; requires one case of `frame`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
