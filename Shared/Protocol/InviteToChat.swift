/// Makes another user a member of one of the token's user's chats.
public struct InviteToChat: Hashable, Sendable {
    /// The chat; the inviting user must be a member.
    public var chatID: UInt64
    /// The user to add, by name.
    public var userName: String

    /// Creates an invitation.
    public init(chatID: UInt64, userName: String) {
        self.chatID = chatID
        self.userName = userName
    }
}
