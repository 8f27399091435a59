internal import SwiftProtobuf

extension JoinChat: ProtoConvertible {
    init(fromProto proto: Courier_V1_JoinChat) throws(WireDecodingError) {
        self.init(name: try Self.fields.name(proto.name, "name"))
    }

    var proto: Courier_V1_JoinChat {
        .with { $0.name = name }
    }
}

extension JoinChat: WireMessage {
    /// Encodes as `courier.v1.JoinChat`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.JoinChat`; the name must keep `NameRule`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
