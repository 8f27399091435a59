/// How far a device holds one chat: the highest consecutive sequence it has (0 for none).
public struct ChatCursor: Hashable, Sendable {
    /// The chat.
    public var chatID: UInt64
    /// The highest sequence held with every earlier one held too; 0 when none.
    public var sequence: UInt64

    /// Creates a cursor.
    public init(chatID: UInt64, sequence: UInt64) {
        self.chatID = chatID
        self.sequence = sequence
    }
}
