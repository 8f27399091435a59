/// The server's answer to a `SyncRequest`: missing messages, in sequence order within each chat.
public struct SyncResponse: Hashable, Sendable {
    /// The missing messages; within each chat consecutive, starting right after the device's cursor.
    public var messages: [ChatMessage]
    /// True when more remain: store these, then sync again from the new cursors.
    public var more: Bool

    /// Creates a sync response.
    public init(messages: [ChatMessage], more: Bool) {
        self.messages = messages
        self.more = more
    }
}
