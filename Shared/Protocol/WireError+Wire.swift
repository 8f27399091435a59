internal import SwiftProtobuf

extension WireError: ProtoConvertible {
    // Every field is optional: a device that receives an error wants its text even without a code.
    init(fromProto proto: Courier_V1_Error) throws(WireDecodingError) {
        self.init(
            code: WireErrorCode(fromProto: proto.code),
            message: proto.message,
            retryAfterSeconds: proto.retryAfterSeconds
        )
    }

    var proto: Courier_V1_Error {
        .with {
            $0.code = code.proto
            $0.message = message
            $0.retryAfterSeconds = retryAfterSeconds
        }
    }
}

extension WireError: WireMessage {
    /// Encodes as `courier.v1.Error`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.Error`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
