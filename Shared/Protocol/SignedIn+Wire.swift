internal import SwiftProtobuf

extension SignedIn: ProtoConvertible {
    init(fromProto proto: Courier_V1_SignedIn) throws(WireDecodingError) {
        let check = Self.fields
        self.init(
            token: try check.required(proto.token, "token"), userID: try check.id(proto.userID, "user_id"),
            deviceID: try check.id(proto.deviceID, "device_id"), userName: try check.name(proto.userName, "user_name")
        )
    }

    var proto: Courier_V1_SignedIn {
        .with {
            $0.token = token
            $0.userID = userID
            $0.deviceID = deviceID
            $0.userName = userName
        }
    }
}

extension SignedIn: WireMessage {
    /// Encodes as `courier.v1.SignedIn`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.SignedIn`; every field is required.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
