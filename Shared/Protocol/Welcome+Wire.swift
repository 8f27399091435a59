internal import SwiftProtobuf

extension Welcome: ProtoConvertible {
    init(fromProto proto: Courier_V1_Welcome) throws(WireDecodingError) {
        let check = Self.fields
        self.init(
            userID: try check.id(proto.userID, "user_id"),
            deviceID: try check.id(proto.deviceID, "device_id"),
            heartbeatIntervalMs: try check.positive(proto.heartbeatIntervalMs, "heartbeat_interval_ms"),
            serverTimeMs: proto.serverTimeMs,
            maxFrameBytes: try check.positive(proto.maxFrameBytes, "max_frame_bytes")
        )
    }

    var proto: Courier_V1_Welcome {
        .with {
            $0.userID = userID
            $0.deviceID = deviceID
            $0.heartbeatIntervalMs = heartbeatIntervalMs
            $0.serverTimeMs = serverTimeMs
            $0.maxFrameBytes = maxFrameBytes
        }
    }
}

extension Welcome: WireMessage {
    /// Encodes as `courier.v1.Welcome`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.Welcome`; requires the ids, the heartbeat interval and the frame limit.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
