/// A device's acknowledgement of pushes: each cursor covers its chat up to and including its sequence.
public struct PushAck: Hashable, Sendable {
    /// One cursor per acknowledged chat; if a chat appears twice, the higher sequence counts.
    public var cursors: [ChatCursor]

    /// Creates an acknowledgement.
    public init(cursors: [ChatCursor]) {
        self.cursors = cursors
    }
}
