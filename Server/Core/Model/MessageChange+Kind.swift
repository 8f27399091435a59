import CourierProtocol

extension MessageChange {
    /// The change as a number: the storage's `kind` column and the log record's `change_kind`
    /// (0 is a message, not a change).
    package var kind: UInt32 {
        switch self {
        case .edit: 1
        case .delete: 2
        case .rename: 3
        }
    }

    /// The change stored as `kind` and `sequence`; nil for kind 0 (a message).
    package init?(kind: UInt32, sequence: UInt64) throws(WireDecodingError) {
        switch kind {
        case 0: return nil
        case 1, 2:
            guard sequence != 0 else { throw .missingField(type: "AcceptedMessage", field: "change_sequence") }
            self = kind == 1 ? .edit(sequence: sequence) : .delete(sequence: sequence)
        case 3: self = .rename
        default: throw .invalidField(type: "AcceptedMessage", field: "change_kind", reason: "unknown kind \(kind)")
        }
    }
}

extension StoredMessage {
    /// The change a stored row holds as `kind` and `refers_to`; nil for a message (kind 0) or
    /// a kind this program does not know (which the schema's writers never store).
    package static func change(kind: some BinaryInteger, sequence: some BinaryInteger) -> MessageChange? {
        (try? MessageChange(kind: UInt32(clamping: kind), sequence: UInt64(clamping: sequence))) ?? nil
    }
}
