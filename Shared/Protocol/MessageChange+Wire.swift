internal import SwiftProtobuf

extension MessageChange: ProtoConvertible {
    init(fromProto proto: Courier_V1_MessageChange) throws(WireDecodingError) {
        let check = Self.fields
        switch try check.oneof(proto.kind, "kind") {
        case .editSequence(let sequence): self = .edit(sequence: try check.id(sequence, "edit_sequence"))
        case .deleteSequence(let sequence): self = .delete(sequence: try check.id(sequence, "delete_sequence"))
        case .rename(let rename):
            guard rename else { throw .invalidField(type: check.type, field: "rename", reason: "false; leave the change unset instead") }
            self = .rename
        }
    }

    var proto: Courier_V1_MessageChange {
        .with {
            switch self {
            case .edit(let sequence): $0.editSequence = sequence
            case .delete(let sequence): $0.deleteSequence = sequence
            case .rename: $0.rename = true
            }
        }
    }
}

extension MessageChange: WireMessage {
    /// Encodes as `courier.v1.MessageChange`.
    public func serializedBytes() -> [UInt8] { wireBytes() }

    /// Decodes a `courier.v1.MessageChange`; requires one case of `kind`, a sequence not 0.
    public init(serializedBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(wireBytes: bytes)
    }
}
