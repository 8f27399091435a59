internal import SwiftProtobuf

extension RedeemInvite: ProtoConvertible {
    init(fromProto proto: Courier_V1_RedeemInvite) throws(WireDecodingError) {
        let check = Self.fields
        let code = try check.required(proto.code, "code")
        guard code.utf8.count <= Self.maxCodeBytes else { throw .invalidField(type: check.type, field: "code", reason: "longer than \(Self.maxCodeBytes) bytes") }
        self.init(code: code, deviceName: try check.name(proto.deviceName, "device_name"))
    }

    var proto: Courier_V1_RedeemInvite {
        .with {
            $0.code = code
            $0.deviceName = deviceName
        }
    }
}

extension RedeemInvite: WireMessage {
    /// Encodes as `courier.v1.RedeemInvite`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.RedeemInvite`; requires a `code` of at most 64 bytes and a
    /// `device_name` that keeps `NameRule`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
