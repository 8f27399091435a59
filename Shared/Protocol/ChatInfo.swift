/// A chat as its members see it in listings and in answers about it.
public struct ChatInfo: Hashable, Sendable {
    /// Most member names one `ChatInfo` lists; `memberCount` counts them all.
    public static let maxMemberNames = 32

    /// The chat's id.
    public var chatID: UInt64
    /// The chat's name, unique on the server.
    public var name: String
    /// The sequence number of the chat's newest message; 0 when it has none.
    public var lastSequence: UInt64
    /// Members' names in byte order, at most `maxMemberNames` of them.
    public var memberNames: [String]
    /// How many members the chat has.
    public var memberCount: UInt32
    /// The display name members gave the chat; empty when it has none.
    public var title: String

    /// What a person sees as the chat's name: its display name, or its unique name.
    public var shownName: String { title.isEmpty ? name : title }

    /// Creates a chat description.
    public init(chatID: UInt64, name: String, lastSequence: UInt64, memberNames: [String], memberCount: UInt32, title: String = "") {
        self.title = title
        self.chatID = chatID
        self.name = name
        self.lastSequence = lastSequence
        self.memberNames = memberNames
        self.memberCount = memberCount
    }
}
