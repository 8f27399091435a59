/// Ends the token's user's membership of a chat (`POST /v1/chats/leave`).
public struct LeaveChat: Hashable, Sendable {
    public var chatID: UInt64

    public init(chatID: UInt64) {
        self.chatID = chatID
    }
}
