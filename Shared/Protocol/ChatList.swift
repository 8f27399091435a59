/// The answer to `GET /v1/chats`: the user's chats in id order, a page at a time.
public struct ChatList: Hashable, Sendable {
    /// Most chats in one answer.
    public static let maxChats = 200

    /// The user's chats with an id above the page's start.
    public var chats: [ChatInfo]
    /// True when more follow: ask again with `after=` the last chat id here.
    public var more: Bool

    /// Creates a chat list.
    public init(chats: [ChatInfo], more: Bool) {
        self.chats = chats
        self.more = more
    }
}
