/// Asks for a chat's members with their names (`POST /v1/chats/members`).
public struct ChatMembersRequest: Hashable, Sendable {
    public var chatID: UInt64

    public init(chatID: UInt64) {
        self.chatID = chatID
    }
}

/// A member of a chat: how a client learns the name behind a sender's user id.
public struct ChatMember: Hashable, Sendable {
    public var userID: UInt64
    public var name: String
    /// The user had a live push session when the answer was made.
    public var online: Bool

    public init(userID: UInt64, name: String, online: Bool = false) {
        self.userID = userID
        self.name = name
        self.online = online
    }
}

/// A chat's members in user id order; `more` when the chat has more than `maxMembers`.
public struct ChatMembers: Hashable, Sendable {
    /// Most members in one answer.
    public static let maxMembers = 1000

    public var chatID: UInt64
    public var members: [ChatMember]
    public var more: Bool

    public init(chatID: UInt64, members: [ChatMember], more: Bool) {
        self.chatID = chatID
        self.members = members
        self.more = more
    }
}
