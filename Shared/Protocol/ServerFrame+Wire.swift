internal import SwiftProtobuf

extension ServerFrame: ProtoConvertible {
    init(fromProto proto: Courier_V1_ServerFrame) throws(WireDecodingError) {
        let check = Self.fields
        switch try check.oneof(proto.frame, "frame") {
        case .welcome(let welcome): self = .welcome(try check.nested(welcome, as: Welcome.self, "welcome"))
        case .push(let push): self = .push(try check.nested(push, as: Push.self, "push"))
        case .heartbeat(let beat): self = .heartbeat(try check.nested(beat, as: Heartbeat.self, "heartbeat"))
        case .sync(let sync): self = .sync(try check.nested(sync, as: SyncResponse.self, "sync"))
        case .error(let error): self = .error(try check.nested(error, as: WireError.self, "error"))
        }
    }

    var proto: Courier_V1_ServerFrame {
        .with {
            switch self {
            case .welcome(let welcome): $0.welcome = welcome.proto
            case .push(let push): $0.push = push.proto
            case .heartbeat(let beat): $0.heartbeat = beat.proto
            case .sync(let sync): $0.sync = sync.proto
            case .error(let error): $0.error = error.proto
            }
        }
    }
}

extension ServerFrame: WireMessage {
    /// Encodes as `courier.v1.ServerFrame`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.ServerFrame`; requires one case of `frame`.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
