/// Asks the server for the messages after the device's cursors.
public struct SyncRequest: Hashable, Sendable {
    /// What the device holds, one cursor per chat; unlisted chats start after the stored delivery cursor.
    public var have: [ChatCursor]
    /// Most messages wanted in one response; 0 lets the server choose (it may send fewer).
    public var limit: UInt32

    /// Creates a sync request.
    public init(have: [ChatCursor], limit: UInt32 = 0) {
        self.have = have
        self.limit = limit
    }
}
