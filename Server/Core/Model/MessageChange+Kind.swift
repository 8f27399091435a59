import CourierProtocol

extension MessageChange {
    /// A log record's change (`change_kind`, `change_sequence`); nil for kind 0 (a message).
    /// Anything else that is not a change is a decoding error.
    package init?(record kind: UInt32, sequence: UInt64) throws(WireDecodingError) {
        guard kind != 0 else { return nil }
        guard let change = MessageChange(kind: kind, sequence: sequence) else {
            if kind == 1 || kind == 2 { throw .missingField(type: "AcceptedMessage", field: "change_sequence") }
            throw .invalidField(type: "AcceptedMessage", field: "change_kind", reason: "unknown kind \(kind)")
        }
        self = change
    }
}

extension StoredMessage {
    /// The change a stored row holds as `kind` and `refers_to`; nil for a message (kind 0) or
    /// a kind this program does not know (which the schema's writers never store).
    package static func change(kind: some BinaryInteger, sequence: some BinaryInteger) -> MessageChange? {
        MessageChange(kind: UInt32(clamping: kind), sequence: UInt64(clamping: sequence))
    }
}
