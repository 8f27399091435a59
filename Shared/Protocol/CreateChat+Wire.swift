internal import SwiftProtobuf

extension CreateChat: ProtoConvertible {
    init(fromProto proto: Courier_V1_CreateChat) throws(WireDecodingError) {
        let check = Self.fields
        self.init(name: try check.name(proto.name, "name"), memberNames: try check.names(proto.memberNames, "member_names", atMost: Self.maxMemberNames))
    }

    var proto: Courier_V1_CreateChat {
        .with {
            $0.name = name
            $0.memberNames = memberNames
        }
    }
}

extension CreateChat: WireMessage {
    /// Encodes as `courier.v1.CreateChat`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.CreateChat`; every name must keep `NameRule`, and at most 100 members.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
