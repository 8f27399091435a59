import CourierProtocol
import Foundation

/// A person who chats; ids come from the database, so every node sees the same ones.
public struct User: Sendable, Equatable, Codable {
    public var id: UInt64
    public var name: String
    public var createdAt: Date

    public init(id: UInt64, name: String, createdAt: Date) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
    }
}

/// One device of a user (a terminal, a phone, a simulated device).
public struct Device: Sendable, Equatable, Codable {
    public var id: UInt64
    public var userID: UInt64
    public var name: String
    public var createdAt: Date

    public init(id: UInt64, userID: UInt64, name: String, createdAt: Date) {
        self.id = id
        self.userID = userID
        self.name = name
        self.createdAt = createdAt
    }
}

public struct Chat: Sendable, Equatable, Codable {
    public var id: UInt64
    public var name: String
    public var createdAt: Date
    /// The sequence number of the chat's newest message; 0 when it has none.
    public var lastSequence: UInt64
    /// The display name members gave the chat (a rename); empty when it has none.
    public var title: String

    public init(id: UInt64, name: String, createdAt: Date, lastSequence: UInt64, title: String = "") {
        self.title = title
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.lastSequence = lastSequence
    }
}

/// A chat with its members, for listings.
public struct ChatSummary: Sendable, Equatable, Codable {
    public var chat: Chat
    /// Member names in byte order; all of them, or the first few when the listing bounds them.
    public var memberNames: [String]
    /// How many members the chat has.
    public var memberCount: Int

    public init(chat: Chat, memberNames: [String], memberCount: Int) {
        self.chat = chat
        self.memberNames = memberNames
        self.memberCount = memberCount
    }
}

/// Who a valid device token speaks for.
public struct TokenIdentity: Sendable, Equatable {
    public var userID: UInt64
    public var deviceID: UInt64
    /// nil: the token does not expire (it can still be revoked).
    public var expiresAt: Date?

    public init(userID: UInt64, deviceID: UInt64, expiresAt: Date?) {
        self.userID = userID
        self.deviceID = deviceID
        self.expiresAt = expiresAt
    }
}

/// A token as issued: the plain text exists only here, the database keeps its hash.
public struct IssuedToken: Sendable, Equatable {
    public var token: String
    public var userID: UInt64
    public var deviceID: UInt64
    public var expiresAt: Date?

    public init(token: String, userID: UInt64, deviceID: UInt64, expiresAt: Date?) {
        self.token = token
        self.userID = userID
        self.deviceID = deviceID
        self.expiresAt = expiresAt
    }
}

/// A message in a chat's history: numbered by its chat's writer. `text` is its text as people
/// see it now: the newest edit's, or empty once deleted.
public struct StoredMessage: Sendable, Equatable {
    public var serverMessageID: UInt64
    public var chatID: UInt64
    public var sequence: UInt64
    public var senderUserID: UInt64
    public var senderDeviceID: UInt64
    public var clientMessageID: String
    public var text: String
    public var clientSentAtMilliseconds: Int64
    public var acceptedAtMilliseconds: Int64
    /// Set when this entry is a change to the chat (edit, delete, rename), not a message.
    public var change: MessageChange?
    /// The text as sent, when an edit replaced it in `text` (kept to tell a retry of the send
    /// from a reuse of its id); nil when `text` is as sent, or the message was deleted.
    public var sentText: String?
    /// When a message was last edited (the edit's acceptance), 0 if never.
    public var editedAtMilliseconds: Int64
    /// The message was deleted: its text (as sent and edited) is gone.
    public var deleted: Bool

    public init(serverMessageID: UInt64, chatID: UInt64, sequence: UInt64, senderUserID: UInt64, senderDeviceID: UInt64, clientMessageID: String, text: String, clientSentAtMilliseconds: Int64, acceptedAtMilliseconds: Int64, change: MessageChange? = nil, sentText: String? = nil, editedAtMilliseconds: Int64 = 0, deleted: Bool = false) {
        self.change = change
        self.sentText = sentText
        self.editedAtMilliseconds = editedAtMilliseconds
        self.deleted = deleted
        self.serverMessageID = serverMessageID
        self.chatID = chatID
        self.sequence = sequence
        self.senderUserID = senderUserID
        self.senderDeviceID = senderDeviceID
        self.clientMessageID = clientMessageID
        self.text = text
        self.clientSentAtMilliseconds = clientSentAtMilliseconds
        self.acceptedAtMilliseconds = acceptedAtMilliseconds
    }
}

extension StoredMessage {
    /// Whether `other` is what this device sent under the same client message id: a retry
    /// (the same chat, text as sent and change) rather than a reuse of the id for something
    /// else. A deleted message's text is gone, so only its chat and change can be compared.
    public func isSameSend(chatID: UInt64, text: String, change: MessageChange?) -> Bool {
        self.chatID == chatID && self.change == change && (deleted || (sentText ?? self.text) == text)
    }
}

/// What storing a message did.
public enum StoreOutcome: Sendable, Equatable {
    /// Stored now, as given (with its sequence number).
    case stored(StoredMessage)
    /// The sending device already used this client message id for this message: nothing changed.
    case duplicate(StoredMessage)
    /// The sending device already used this client message id for a different message.
    case conflict(StoredMessage)

    /// The message this call added to its chat, if it added one.
    public var added: StoredMessage? {
        if case .stored(let message) = self { message } else { nil }
    }
}

/// One chat's part of a batch write (`ChatBatchStore.storeBatch`): messages in the order they
/// are to be numbered, and the server message ids among them that are second copies (set only
/// by a test-fault decorator).
public struct ChatWrite: Sendable {
    public var chatID: UInt64
    public var messages: [StoredMessage]
    public var copies: Set<UInt64>
    /// Server message ids of messages whose deduplication key the caller has never seen stored
    /// (the consumers' `DedupFilter` says so): a hint that a store may skip looking them up.
    /// Only a hint: a key stored after all must still come out as a duplicate or a conflict.
    public var unseenKeys: Set<UInt64>

    public init(chatID: UInt64, messages: [StoredMessage], copies: Set<UInt64> = [], unseenKeys: Set<UInt64> = []) {
        self.chatID = chatID
        self.messages = messages
        self.copies = copies
        self.unseenKeys = unseenKeys
    }
}

/// What a batch write did with one chat's messages.
public enum ChatWriteResult: Sendable, Equatable {
    /// Each message's outcome, in order (nil: not stored, as its sender is not a member), what
    /// the write added to the chat in sequence order (what its members are pushed), and the
    /// chat's members as the write saw them.
    case written([StoreOutcome?], added: [StoredMessage], members: Set<UInt64>)
    /// No such chat: nothing stored.
    case chatNotFound
    /// This chat's part failed and was rolled back; the other chats' parts stand.
    case failed(StorageError)
}

/// One search result.
public struct SearchHit: Sendable, Equatable {
    public var message: StoredMessage
    public var chatName: String
    public var senderName: String
    /// The matching words marked with [ ], and some context.
    public var snippet: String

    public init(message: StoredMessage, chatName: String, senderName: String, snippet: String) {
        self.message = message
        self.chatName = chatName
        self.senderName = senderName
        self.snippet = snippet
    }
}

public struct StorageStatistics: Sendable, Equatable, Codable {
    public var users: Int
    public var devices: Int
    public var chats: Int
    public var messages: Int
    public var activeTokens: Int
    public var schemaVersion: String

    public init(users: Int, devices: Int, chats: Int, messages: Int, activeTokens: Int, schemaVersion: String) {
        self.users = users
        self.devices = devices
        self.chats = chats
        self.messages = messages
        self.activeTokens = activeTokens
        self.schemaVersion = schemaVersion
    }
}

/// One member device's delivery cursor in a chat.
/// Where one device's delivery stands in one chat: acknowledged through `sequence`.
public struct DeliveryCursor: Sendable, Hashable {
    public var deviceID: UInt64
    public var chatID: UInt64
    public var sequence: UInt64

    public init(deviceID: UInt64, chatID: UInt64, sequence: UInt64) {
        self.deviceID = deviceID
        self.chatID = chatID
        self.sequence = sequence
    }
}

public struct MemberDeviceCursor: Sendable, Equatable {
    public var userID: UInt64
    public var deviceID: UInt64
    public var sequence: UInt64
    public init(userID: UInt64, deviceID: UInt64, sequence: UInt64) {
        self.userID = userID
        self.deviceID = deviceID
        self.sequence = sequence
    }
}

/// A one-time sign-in code for a user, as issued: the code itself is shown once (only its hash
/// is stored).
public struct IssuedInvite: Sendable, Equatable {
    public var code: String
    public var userName: String
    public var expiresAt: Date

    public init(code: String, userName: String, expiresAt: Date) {
        self.code = code
        self.userName = userName
        self.expiresAt = expiresAt
    }
}

/// What redeeming an invite created: the user (new, or the one the invite named), a device
/// of its own, and that device's token.
public struct RedeemedInvite: Sendable, Equatable {
    public var user: User
    public var device: Device
    public var token: IssuedToken

    public init(user: User, device: Device, token: IssuedToken) {
        self.user = user
        self.device = device
        self.token = token
    }
}
