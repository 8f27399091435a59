/// Makes the token's user a member of the chat of this name (chats are open by name).
public struct JoinChat: Hashable, Sendable {
    /// The chat's name.
    public var name: String

    /// Creates a request to join a chat.
    public init(name: String) {
        self.name = name
    }
}
