internal import SwiftProtobuf

extension Heartbeat: ProtoConvertible {
    init(fromProto proto: Courier_V1_Heartbeat) throws(WireDecodingError) {
        self.init(sentAtMs: proto.sentAtMs)
    }

    var proto: Courier_V1_Heartbeat {
        .with { $0.sentAtMs = sentAtMs }
    }
}

extension Heartbeat: WireMessage {
    /// Encodes as `courier.v1.Heartbeat`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.Heartbeat`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
