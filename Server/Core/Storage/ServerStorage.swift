import Foundation

/// Everything the server keeps beyond the log: users, devices, tokens, chats, members, message
/// history with full-text search, delivery cursors and deduplication keys.
///
/// The embedded implementation is SQLite (`SQLiteStorage`); a PostgreSQL one will sit behind the
/// same protocol, so the SQL is kept portable and the same tests run against each.
public protocol ServerStorage: ChatBatchStore, DeliveryCursorStore, CredentialStore {
    // MARK: Accounts (`user(named:)` and `devices(ofUser:)` are in `CredentialStore`)
    func createUser(name: String) async throws(StorageError) -> User
    func user(id: UInt64) async throws(StorageError) -> User
    func listUsers() async throws(StorageError) -> [User]
    func createDevice(userID: UInt64, name: String) async throws(StorageError) -> Device
    func device(id: UInt64) async throws(StorageError) -> Device
    /// Makes sure of every user, device, chat and membership of `plan` in one transaction,
    /// reusing what exists by name, and issues each device a new token. Nothing changes when a
    /// name is invalid or a member index is out of range (`.invalid`).
    func provision(_ plan: ProvisionPlan) async throws(StorageError) -> ProvisionResult

    // MARK: Tokens (`authenticate` and `tokensRevoked` are in `CredentialStore`)
    /// A new random token for the device; only its hash is stored.
    func issueToken(deviceID: UInt64, expiresAt: Date?) async throws(StorageError) -> IssuedToken
    /// Revokes one token; false when it was unknown or already revoked.
    func revokeToken(_ token: String, now: Date) async throws(StorageError) -> Bool
    /// Revokes every token and pre-shared key of a device; returns how many tokens were active.
    func revokeTokens(deviceID: UInt64, now: Date) async throws(StorageError) -> Int

    // MARK: Pre-shared keys (CoAP over DTLS; `deviceKey(identity:)` is in `CredentialStore`)
    /// A new pre-shared key for the device (`DeviceKey.generate`); earlier ones stay valid.
    func issueDeviceKey(deviceID: UInt64) async throws(StorageError) -> DeviceKey

    // MARK: Invites
    /// A one-time code with which a person signs in as `userName` (created then, if it does not
    /// exist yet) until `expiresAt`; only the code's hash is stored.
    func createInvite(userName: String, expiresAt: Date) async throws(StorageError) -> IssuedInvite
    /// Redeems `code` in one transaction: marks it used, creates its user if missing, a device
    /// named `deviceName` and a token for it. Nil, with nothing changed, when the code is
    /// unknown, already used or expired at `now`; a device name the user has already is
    /// `.alreadyExists`, with nothing changed either (the code stays usable).
    func redeemInvite(code: String, deviceName: String, now: Date) async throws(StorageError) -> RedeemedInvite?

    // MARK: Chats
    /// Creates a chat with its first members, in one transaction: nothing is created when the
    /// name is taken (`.alreadyExists`) or a member does not exist (`.notFound`).
    func createChat(name: String, memberIDs: [UInt64]) async throws(StorageError) -> Chat
    func chat(id: UInt64) async throws(StorageError) -> Chat
    func chat(named name: String) async throws(StorageError) -> Chat
    /// Adds a member; adding one twice changes nothing.
    func addMember(chatID: UInt64, userID: UInt64) async throws(StorageError)
    /// Ends a membership; false (and nothing changed) when the user was not a member. No such
    /// chat: `.notFound`.
    func removeMember(chatID: UInt64, userID: UInt64) async throws(StorageError) -> Bool
    func members(ofChat chatID: UInt64) async throws(StorageError) -> Set<UInt64>
    /// The chat's members as users (with their names), in id order, at most `limit`.
    func memberUsers(ofChat chatID: UInt64, limit: Int) async throws(StorageError) -> [User]
    func chats(ofUser userID: UInt64) async throws(StorageError) -> [Chat]
    /// Users who share at least one chat with `userID` (not the user), at most `limit`.
    func chatPeers(ofUser userID: UInt64, limit: Int) async throws(StorageError) -> [UInt64]
    func listChats() async throws(StorageError) -> [ChatSummary]
    /// The user's chats with an id above `afterChatID`, in id order, at most `limit`; each lists
    /// at most `maxMemberNames` member names (the first in byte order) and counts all members.
    func chatSummaries(ofUser userID: UInt64, afterChatID: UInt64, limit: Int, maxMemberNames: Int) async throws(StorageError) -> [ChatSummary]
    /// One chat, listing at most `maxMemberNames` member names (as in `chatSummaries`).
    func chatSummary(id: UInt64, maxMemberNames: Int) async throws(StorageError) -> ChatSummary

    // MARK: Messages
    /// Stores messages of one chat, each with its deduplication key and search entry, in one
    /// transaction, numbering the new ones consecutively after `afterSequence`, which must be
    /// the chat's stored last sequence (else `.sequenceConflict`: another writer was here). A
    /// device's reused client message id is `.duplicate` (same chat and text) or `.conflict`;
    /// neither takes a number or changes anything. The `sequence` of each given message is
    /// ignored. Outcomes come in the order of `messages`.
    ///
    /// A change (`StoredMessage.change`) is numbered like a message and carried out in order:
    /// an edit or delete must refer to a message (not a change) its sender sent, stored by an
    /// earlier call (else `.invalid`, nothing stored; in `storeBatch`, a nil outcome).
    ///
    func storeMessages(_ messages: [StoredMessage], chatID: UInt64, afterSequence: UInt64) async throws(StorageError) -> [StoreOutcome]
    /// The highest server message id stored (0 when none).
    func maxServerMessageID() async throws(StorageError) -> UInt64
    /// Every deduplication key stored, for the gateway's filter at startup.
    func forEachDedupKey(_ body: @escaping @Sendable (UInt64, String) -> Void) async throws(StorageError)
    /// The stored message a device sent under `clientMessageID`, if any.
    func message(deviceID: UInt64, clientMessageID: String) async throws(StorageError) -> StoredMessage?
    /// Messages of a chat with sequence above `afterSequence`, oldest first.
    func history(chatID: UInt64, afterSequence: UInt64, limit: Int) async throws(StorageError) -> [StoredMessage]
    /// The newest `limit` messages of a chat with sequence below `beforeSequence`, oldest first.
    func history(chatID: UInt64, beforeSequence: UInt64, limit: Int) async throws(StorageError) -> [StoredMessage]
    /// Messages matching every word (whole words, not substrings), best first. With `userID`,
    /// only chats that user is a member of.
    func search(words: String, userID: UInt64?, chatID: UInt64?, limit: Int) async throws(StorageError) -> [SearchHit]

    // MARK: Delivery
    func deliveryCursor(deviceID: UInt64, chatID: UInt64) async throws(StorageError) -> UInt64
    /// Every stored delivery cursor of a device: chat id -> sequence.
    func deliveryCursors(deviceID: UInt64) async throws(StorageError) -> [UInt64: UInt64]
    /// Every device of every member of a chat that can still connect (it has a token neither
    /// revoked nor expired), with its delivery cursor in that chat (0 when it has none).
    func memberDeviceCursors(chatID: UInt64, now: Date) async throws(StorageError) -> [MemberDeviceCursor]

    func statistics() async throws(StorageError) -> StorageStatistics
}

extension ServerStorage {
    /// Creates a chat with no members yet.
    public func createChat(name: String) async throws(StorageError) -> Chat {
        try await createChat(name: name, memberIDs: [])
    }

    /// Moves one cursor forward (never back).
    public func advanceDeliveryCursor(deviceID: UInt64, chatID: UInt64, to sequence: UInt64) async throws(StorageError) {
        try await advanceDeliveryCursors([DeliveryCursor(deviceID: deviceID, chatID: chatID, sequence: sequence)])
    }

    /// Stores one message numbered `message.sequence` (see `storeMessages`).
    public func storeMessage(_ message: StoredMessage) async throws(StorageError) -> StoreOutcome {
        guard message.sequence >= 1 else { throw .invalid("a message's sequence starts at 1") }
        return try await storeMessages([message], chatID: message.chatID, afterSequence: message.sequence - 1)[0]
    }
}

/// What the log's consumers write through: every chat of a batch in one transaction, and a
/// durability point that every transaction before it shares. Its own protocol so that a
/// decorator (the test faults) can stand between them and the store.
public protocol ChatBatchStore: Sendable {
    /// Stores the messages of many chats in one transaction, committed (visible to every
    /// reader) when this returns and durable after the next `makeDurable()` (a store whose every
    /// commit is synced, like PostgreSQL's, is durable at once): each chat's part is checked against its members and its
    /// deduplication keys and numbered after its stored last sequence, as `storeMessages` does,
    /// inside the transaction, so the writer of the transaction is the single writer of every
    /// chat in it. A chat whose part fails is rolled back alone (`.failed`); a failed commit
    /// throws and stores nothing. Results come in the order of `writes`.
    ///
    /// A message whose server message id is in its write's `copies` (test faults only) is a
    /// second copy of the message its device sent under the same client message id earlier in
    /// the write: it takes its own sequence number and no deduplication key. When that earlier
    /// message was not stored by this write (a replay), the copy is not stored either.
    func storeBatch(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult]

    /// Returns once every batch stored before this call survives a power cut: the log's
    /// consumers call it before they commit their offsets, so that the log keeps each message
    /// until its store is durable, and all partitions share one sync for many batches. A store
    /// that indexes for search in batches (SQLite) indexes what was stored before it here, so
    /// search follows the store once this returns.
    func makeDurable() async throws(StorageError)

    /// The executor whose thread runs this store's transactions, if it has one: a caller that
    /// runs its tasks there (the log's consumers) stores without a hop to another thread.
    var executor: (any TaskExecutor)? { get }
}

extension ChatBatchStore {
    public var executor: (any TaskExecutor)? { nil }
}

/// What checking a device's credentials reads (`TokenAuthenticator`). Its own protocol so that
/// a test can stand between the checker and the store.
public protocol CredentialStore: Sendable {
    /// Who `token` speaks for, or nil when it is unknown, revoked or expired at `now`.
    func authenticate(token: String, now: Date) async throws(StorageError) -> TokenIdentity?
    /// The hashes (`DeviceToken.hash`) of the tokens revoked at or after `since`, by this
    /// process or any other: what a checker that keeps answers must forget.
    func tokensRevoked(since: Date) async throws(StorageError) -> [[UInt8]]
    /// The device and key a PSK identity names; nil when unknown or revoked.
    func deviceKey(identity: String) async throws(StorageError) -> DeviceKey?
    func user(named name: String) async throws(StorageError) -> User
    func devices(ofUser userID: UInt64) async throws(StorageError) -> [Device]
}

/// Where acknowledged delivery cursors are stored (`DeliveryCursorWriter` writes through it).
public protocol DeliveryCursorStore: Sendable {
    /// Moves each cursor forward (never back), all in one transaction: acknowledgements are
    /// thousands a second on a busy server, so they are written in batches.
    func advanceDeliveryCursors(_ cursors: [DeliveryCursor]) async throws(StorageError)
}
