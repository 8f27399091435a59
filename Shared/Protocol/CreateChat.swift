/// Creates a chat; the token's user becomes a member, and so does every user named.
public struct CreateChat: Hashable, Sendable {
    /// Most users one request may name.
    public static let maxMemberNames = 100

    /// The chat's name (see `NameRule`).
    public var name: String
    /// Other users to add, by name; the creator's own name or a repeated one changes nothing.
    public var memberNames: [String]

    /// Creates a request to create a chat.
    public init(name: String, memberNames: [String] = []) {
        self.name = name
        self.memberNames = memberNames
    }
}
