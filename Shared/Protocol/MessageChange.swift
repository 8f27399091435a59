/// What a change to a chat does: an event in the chat's total order that refers to an earlier
/// message (edit, delete) or to the chat itself (rename). See `SendMessage.change`.
public enum MessageChange: Hashable, Sendable {
    /// The sender's own message at this sequence now reads the change's text.
    case edit(sequence: UInt64)
    /// The sender's own message at this sequence is deleted (the change's text is empty).
    case delete(sequence: UInt64)
    /// The chat's display name is now the change's text.
    case rename

    /// Longest display name, in characters.
    public static let maxTitleCharacters = 64

    /// The sequence of the message an edit or a delete refers to; nil for a rename.
    public var sequence: UInt64? {
        switch self {
        case .edit(let sequence), .delete(let sequence): sequence
        case .rename: nil
        }
    }

    /// Why `text` cannot go with this change, or nil when it can.
    public func problem(withText text: String) -> String? {
        switch self {
        case .edit:
            return text.isEmpty ? "an edit's text is empty" : nil
        case .delete:
            return text.isEmpty ? nil : "a delete carries no text"
        case .rename:
            if text.isEmpty { return "a display name is empty" }
            if text.count > Self.maxTitleCharacters { return "a display name is longer than \(Self.maxTitleCharacters) characters" }
            if text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) { return "a display name holds a control character" }
            return nil
        }
    }
}

extension MessageChange {
    /// The change as a number, for a store's column or a record's field (0 is a message, not a
    /// change): the server's log and database and the client's cache number them alike.
    public var kind: UInt32 {
        switch self {
        case .edit: 1
        case .delete: 2
        case .rename: 3
        }
    }

    /// The change stored as `kind` and `sequence`; nil for kind 0 (a message), an unknown kind,
    /// or an edit or delete without its sequence.
    public init?(kind: UInt32, sequence: UInt64) {
        switch kind {
        case 1 where sequence != 0: self = .edit(sequence: sequence)
        case 2 where sequence != 0: self = .delete(sequence: sequence)
        case 3: self = .rename
        default: return nil
        }
    }
}
