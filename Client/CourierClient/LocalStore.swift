import CourierDevice
import CourierProtocol
import Foundation
import GRDB
import Synchronization

/// The client's one SQLite file in its state directory: the outbox (messages not yet
/// acknowledged by the server), the recent history of each chat (so the screen opens at once
/// and works offline), what the device holds of each chat, and the state of the user's own
/// messages (waiting, accepted, delivered).
///
/// Bounded: each chat keeps its newest `historyPerChat` messages; older ones are deleted (the
/// server still has them). The outbox is bounded by `maxOutbox`: beyond it `enqueue` refuses.
public final class LocalStore: PushStore, Sendable {
    public static let historyPerChat = 2_000
    public static let maxOutbox = 10_000

    /// A message the user wrote that the server has not acknowledged yet.
    public struct OutboxEntry: Sendable, Equatable {
        public var position: Int64
        public var clientMessageID: String
        public var chatID: UInt64
        public var text: String
        public var clientSentAtMs: Int64
        /// Set when the server refused it for good (a 4.xx); it is then no longer sent.
        public var failure: String?
        /// Set when this is a change to the chat (edit, delete, rename), not a message.
        public var change: MessageChange?

        /// What goes to the server for this entry.
        public var sendMessage: SendMessage {
            SendMessage(clientMessageID: clientMessageID, chatID: chatID, text: text, clientSentAtMs: clientSentAtMs, change: change)
        }
    }

    /// Where one of the user's own messages stands, as the screen shows it.
    public enum OwnState: String, Sendable {
        case waiting, accepted, delivered, failed
    }

    /// One message of a chat's history as the screen shows it.
    public struct Line: Sendable, Equatable {
        public var chatID: UInt64
        /// nil for an own message not yet numbered by the server.
        public var sequence: UInt64?
        public var senderUserID: UInt64
        public var clientMessageID: String
        public var text: String
        public var sentAtMs: Int64
        /// For the user's own messages.
        public var own: OwnState?
        /// The message was edited since it was sent (`text` is the newest).
        public var edited: Bool
        /// The message was deleted (`text` is empty).
        public var deleted: Bool
        /// Set for a rename of the chat (`text` is the new name); edits and deletes are not lines.
        public var renamed: Bool

        public init(chatID: UInt64, sequence: UInt64?, senderUserID: UInt64, clientMessageID: String, text: String, sentAtMs: Int64, own: OwnState?,
                    edited: Bool = false, deleted: Bool = false, renamed: Bool = false) {
            self.edited = edited
            self.deleted = deleted
            self.renamed = renamed
            self.chatID = chatID
            self.sequence = sequence
            self.senderUserID = senderUserID
            self.clientMessageID = clientMessageID
            self.text = text
            self.sentAtMs = sentAtMs
            self.own = own
        }
    }

    public struct ChatEntry: Sendable, Equatable {
        public var id: UInt64
        public var name: String
        public var unread: Int
    }

    public enum StoreError: Error, CustomStringConvertible {
        case outboxFull(Int)
        public var description: String {
            switch self {
            case .outboxFull(let bound): return "the outbox holds \(bound) messages already; wait until the server is reachable"
            }
        }
    }

    /// A message of another user that arrived (by push or sync), for the screen's bell.
    public struct Arrival: Sendable, Equatable {
        public var chatID: UInt64
        public var senderUserID: UInt64
        public var text: String
    }

    /// Most arrivals kept until the screen takes them; beyond, the oldest are dropped (the
    /// screen rings once for a batch anyway).
    public static let maxArrivals = 1_000

    private let database: DatabaseQueue
    private let arrivals = Mutex<[Arrival]>([])
    /// Presence pushed since the screen last took it: each user's latest state (true: online).
    /// Bounded by `maxArrivals` users; beyond, the news is dropped (a member list corrects it).
    private let presenceNews = Mutex<[UInt64: Bool]>([:])
    public let userID: UInt64
    private let changes: AsyncStream<Void>.Continuation
    /// Yields after every change (bounded: changes coalesce to one pending signal).
    public let changed: AsyncStream<Void>

    public init(path: String, userID: UInt64) throws {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            // The outbox is the user's only copy of an unsent message: every commit is synced.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        database = try DatabaseQueue(path: path, configuration: configuration)
        self.userID = userID
        (changed, changes) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: outbox, history, cursors") { db in
            try db.execute(sql: """
                CREATE TABLE outbox (
                    position INTEGER PRIMARY KEY AUTOINCREMENT,
                    client_message_id TEXT NOT NULL UNIQUE,
                    chat_id INTEGER NOT NULL,
                    text TEXT NOT NULL,
                    client_sent_at_ms INTEGER NOT NULL,
                    failure TEXT
                );
                CREATE TABLE messages (
                    chat_id INTEGER NOT NULL,
                    sequence INTEGER NOT NULL,
                    server_message_id INTEGER NOT NULL,
                    sender_user_id INTEGER NOT NULL,
                    sender_device_id INTEGER NOT NULL,
                    client_message_id TEXT NOT NULL,
                    text TEXT NOT NULL,
                    client_sent_at_ms INTEGER NOT NULL,
                    accepted_at_ms INTEGER NOT NULL,
                    PRIMARY KEY (chat_id, sequence)
                );
                CREATE TABLE cursors (chat_id INTEGER PRIMARY KEY, sequence INTEGER NOT NULL);
                CREATE TABLE own (
                    client_message_id TEXT PRIMARY KEY,
                    chat_id INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    server_message_id INTEGER
                );
                CREATE TABLE chats (id INTEGER PRIMARY KEY, name TEXT NOT NULL, read_through INTEGER NOT NULL DEFAULT 0);
                """)
        }
        // Names of the people in the user's chats, from the server's member lists.
        migrator.registerMigration("v2: user names") { db in
            try db.execute(sql: "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        }
        // Changes to chats (edit, delete, rename): in the outbox like messages, in the history
        // as entries (`change_kind` as the server's log numbers them, 0 for a message).
        migrator.registerMigration("v3: changes") { db in
            try db.execute(sql: """
                ALTER TABLE outbox ADD COLUMN change_kind INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE outbox ADD COLUMN change_sequence INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN change_kind INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN change_sequence INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN edited_at_ms INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE chats ADD COLUMN title TEXT NOT NULL DEFAULT '';
                """)
        }
        try migrator.migrate(database)
    }

    /// Remembers the names of a chat's members.
    public func rememberMembers(_ members: ChatMembers) throws {
        try database.write { db in
            for member in members.members {
                try db.execute(sql: "INSERT INTO users (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                               arguments: [Int64(member.userID), member.name])
            }
        }
        changes.yield()
    }

    /// The names known, by user id.
    public func userNames() throws -> [UInt64: String] {
        try database.read { db in
            var names: [UInt64: String] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT id, name FROM users") { names[UInt64(row["id"] as Int64)] = row["name"] }
            return names
        }
    }

    // MARK: Outbox

    /// Writes a new message (or, with `change`, a change) to the outbox, synced to disk, before
    /// anything is sent.
    @discardableResult
    public func enqueue(chatID: UInt64, text: String, change: MessageChange? = nil, now: Date = Date()) throws -> OutboxEntry {
        let id = UUID().uuidString.lowercased()
        let sentAt = Int64(now.timeIntervalSince1970 * 1000)
        let entry = try database.write { db -> OutboxEntry in
            let waiting = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM outbox WHERE failure IS NULL") ?? 0
            guard waiting < Self.maxOutbox else { throw StoreError.outboxFull(Self.maxOutbox) }
            try db.execute(sql: "INSERT INTO outbox (client_message_id, chat_id, text, client_sent_at_ms, change_kind, change_sequence) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [id, Int64(chatID), text, sentAt, Self.kind(change), Int64(clamping: change?.sequence ?? 0)])
            let position = db.lastInsertedRowID
            try db.execute(sql: "INSERT INTO own (client_message_id, chat_id, state) VALUES (?, ?, 'waiting')", arguments: [id, Int64(chatID)])
            return OutboxEntry(position: position, clientMessageID: id, chatID: chatID, text: text, clientSentAtMs: sentAt, change: change)
        }
        changes.yield()
        return entry
    }

    /// The oldest message still to send, if any.
    public func nextToSend() throws -> OutboxEntry? {
        try database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM outbox WHERE failure IS NULL ORDER BY position LIMIT 1").map(Self.outboxEntry)
        }
    }

    public func outbox() throws -> [OutboxEntry] {
        try database.read { db in try Row.fetchAll(db, sql: "SELECT * FROM outbox ORDER BY position").map(Self.outboxEntry) }
    }

    /// Messages waiting to be sent (not failed).
    public func waitingCount() throws -> Int {
        try database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM outbox WHERE failure IS NULL") ?? 0 }
    }

    /// The server holds the message: it leaves the outbox.
    public func accepted(_ result: SendResult) throws {
        try database.write { db in
            try db.execute(sql: "DELETE FROM outbox WHERE client_message_id = ?", arguments: [result.clientMessageID])
            try db.execute(sql: "UPDATE own SET state = 'accepted', server_message_id = ? WHERE client_message_id = ? AND state = 'waiting'",
                           arguments: [Int64(result.serverMessageID), result.clientMessageID])
        }
        changes.yield()
    }

    /// The server refused the message for good: it stays in the outbox, marked, and is not sent.
    public func failed(clientMessageID: String, reason: String) throws {
        try database.write { db in
            try db.execute(sql: "UPDATE outbox SET failure = ? WHERE client_message_id = ?", arguments: [reason, clientMessageID])
            try db.execute(sql: "UPDATE own SET state = 'failed' WHERE client_message_id = ?", arguments: [clientMessageID])
        }
        changes.yield()
    }

    // MARK: PushStore

    public func cursors() async throws -> [ChatCursor] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT chat_id, sequence FROM cursors").map { ChatCursor(chatID: UInt64($0[0] as Int64), sequence: UInt64($0[1] as Int64)) }
        }
    }

    public func store(_ messages: [ChatMessage]) async throws {
        try await database.write { db in
            var chats: Set<UInt64> = []
            for message in messages {
                chats.insert(message.chatID)
                try Self.insert(db, message)
                try Self.apply(db, message)
                try db.execute(sql: "INSERT INTO cursors (chat_id, sequence) VALUES (?, ?) ON CONFLICT (chat_id) DO UPDATE SET sequence = MAX(sequence, excluded.sequence)",
                               arguments: [Int64(message.chatID), Int64(message.chatSequence)])
                if message.senderUserID == self.userID {
                    // Our own message came back numbered: it is at least accepted (a message
                    // sent from another of our devices was never in this outbox).
                    try db.execute(sql: "DELETE FROM outbox WHERE client_message_id = ?", arguments: [message.clientMessageID])
                    try db.execute(sql: """
                        INSERT INTO own (client_message_id, chat_id, state, server_message_id) VALUES (?, ?, 'accepted', ?)
                        ON CONFLICT (client_message_id) DO UPDATE SET state = 'accepted', server_message_id = excluded.server_message_id
                        WHERE own.state IN ('waiting', 'failed')
                        """, arguments: [message.clientMessageID, Int64(message.chatID), Int64(message.serverMessageID)])
                }
            }
            try Self.prune(db, chats: chats)
        }
        let arrived = messages.filter { $0.senderUserID != userID && $0.change == nil }.map { Arrival(chatID: $0.chatID, senderUserID: $0.senderUserID, text: $0.text) }
        if !arrived.isEmpty {
            arrivals.withLock { arrivals in
                arrivals += arrived
                if arrivals.count > Self.maxArrivals { arrivals.removeFirst(arrivals.count - Self.maxArrivals) }
            }
        }
        changes.yield()
    }

    public func presence(_ presence: Presence) async {
        presenceNews.withLock { news in
            for user in presence.onlineUserIDs where news.count < Self.maxArrivals || news[user] != nil { news[user] = true }
            for user in presence.offlineUserIDs where news.count < Self.maxArrivals || news[user] != nil { news[user] = false }
        }
        changes.yield()
    }

    /// Who came online (true) or went offline (false) since the last call.
    public func takePresence() -> [UInt64: Bool] {
        presenceNews.withLock { news in
            defer { news = [:] }
            return news
        }
    }

    /// The user left a chat: its history, cursor and unsent messages go from this device.
    public func forgetChat(_ chatID: UInt64) throws {
        try database.write { db in
            for table in ["messages", "cursors", "outbox", "own"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE chat_id = ?", arguments: [Int64(chatID)])
            }
            try db.execute(sql: "DELETE FROM chats WHERE id = ?", arguments: [Int64(chatID)])
        }
        changes.yield()
    }

    /// Messages of other users that arrived since the last call, oldest first.
    public func takeArrivals() -> [Arrival] {
        arrivals.withLock { arrivals in
            defer { arrivals = [] }
            return arrivals
        }
    }

    /// Keeps older messages fetched from the server (PgUp past the cache) as far as the
    /// cache's bound (`historyPerChat` below a chat's newest) allows; the cursors the push
    /// session keeps are not touched.
    public func keepOlder(_ messages: [ChatMessage]) throws {
        try database.write { db in
            for message in messages {
                try Self.insert(db, message)
            }
            try Self.prune(db, chats: Set(messages.map(\.chatID)))
        }
    }

    private static func insert(_ db: Database, _ message: ChatMessage) throws {
        try db.execute(sql: """
            INSERT OR IGNORE INTO messages (chat_id, sequence, server_message_id, sender_user_id, sender_device_id,
                client_message_id, text, client_sent_at_ms, accepted_at_ms, change_kind, change_sequence, edited_at_ms, deleted)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [Int64(message.chatID), Int64(message.chatSequence), Int64(message.serverMessageID), Int64(message.senderUserID),
                             Int64(message.senderDeviceID), message.clientMessageID, message.text, message.clientSentAtMs, message.acceptedAtMs,
                             kind(message.change), Int64(clamping: message.change?.sequence ?? 0), message.editedAtMs, message.deleted])
    }

    /// Carries out a change that arrived in the chat's order (push or sync): what it refers to
    /// now reads as the server has it. Pages of older history are not applied: they come newest
    /// last but hold messages as they are now, so an old edit would undo a newer one.
    private static func apply(_ db: Database, _ entry: ChatMessage) throws {
        switch entry.change {
        case nil:
            return
        case .edit(let sequence)?:
            try db.execute(sql: "UPDATE messages SET text = ?, edited_at_ms = ? WHERE chat_id = ? AND sequence = ? AND deleted = 0",
                           arguments: [entry.text, entry.acceptedAtMs, Int64(entry.chatID), Int64(clamping: sequence)])
        case .delete(let sequence)?:
            try db.execute(sql: "UPDATE messages SET text = '', deleted = 1 WHERE chat_id = ? AND sequence = ?",
                           arguments: [Int64(entry.chatID), Int64(clamping: sequence)])
        case .rename?:
            try db.execute(sql: "INSERT INTO chats (id, name, title) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET title = excluded.title",
                           arguments: [Int64(entry.chatID), "chat \(entry.chatID)", entry.text])
        }
    }

    /// A change as the server numbers it (0: a message).
    private static func kind(_ change: MessageChange?) -> Int64 {
        Int64(change?.kind ?? 0)
    }

    private static func change(kind: Int64, sequence: Int64) -> MessageChange? {
        MessageChange(kind: UInt32(clamping: kind), sequence: UInt64(clamping: sequence))
    }

    /// Keeps each chat's newest `historyPerChat` messages.
    private static func prune(_ db: Database, chats: Set<UInt64>) throws {
        for chat in chats {
            try db.execute(sql: """
                DELETE FROM messages WHERE chat_id = ? AND sequence <= (SELECT MAX(sequence) FROM messages WHERE chat_id = ?) - ?
                """, arguments: [Int64(chat), Int64(chat), Self.historyPerChat])
        }
    }

    public func delivered(_ receipt: DeliveryReceipt) async {
        _ = try? await database.write { db in
            try db.execute(sql: """
                INSERT INTO own (client_message_id, chat_id, state, server_message_id) VALUES (?, ?, 'delivered', ?)
                ON CONFLICT (client_message_id) DO UPDATE SET state = 'delivered', server_message_id = excluded.server_message_id
                """, arguments: [receipt.clientMessageID, Int64(receipt.chatID), Int64(receipt.serverMessageID)])
        }
        changes.yield()
    }

    // MARK: What the screen shows

    /// The newest `limit` lines of a chat: stored history, then own messages still waiting.
    public func lines(chatID: UInt64, limit: Int = 500) throws -> [Line] {
        try database.read { db in
            let stored = try Row.fetchAll(db, sql: """
                SELECT m.*, o.state AS own_state FROM messages m LEFT JOIN own o ON o.client_message_id = m.client_message_id
                WHERE m.chat_id = ? AND m.change_kind NOT IN (1, 2) ORDER BY m.sequence DESC LIMIT ?
                """, arguments: [Int64(chatID), limit]).reversed().map { row -> Line in
                let sender = UInt64(row["sender_user_id"] as Int64)
                let ownState = (row["own_state"] as String?).flatMap(OwnState.init(rawValue:))
                return Line(chatID: chatID, sequence: UInt64(row["sequence"] as Int64), senderUserID: sender, clientMessageID: row["client_message_id"],
                            text: row["text"], sentAtMs: row["client_sent_at_ms"], own: sender == self.userID ? (ownState ?? .accepted) : nil,
                            edited: (row["edited_at_ms"] as Int64) != 0, deleted: row["deleted"], renamed: (row["change_kind"] as Int64) == 3)
            }
            let storedIDs = Set(stored.map(\.clientMessageID))
            let pending = try Row.fetchAll(db, sql: """
                SELECT b.*, o.state AS own_state FROM outbox b LEFT JOIN own o ON o.client_message_id = b.client_message_id
                WHERE b.chat_id = ? AND b.change_kind = 0 ORDER BY b.position
                """, arguments: [Int64(chatID)]).map { row -> Line in
                Line(chatID: chatID, sequence: nil, senderUserID: self.userID, clientMessageID: row["client_message_id"], text: row["text"],
                     sentAtMs: row["client_sent_at_ms"], own: (row["failure"] as String?) == nil ? .waiting : .failed)
            }.filter { !storedIDs.contains($0.clientMessageID) }
            return stored + pending
        }
    }

    public func ownState(clientMessageID: String) throws -> OwnState? {
        try database.read { db in
            try (String.fetchOne(db, sql: "SELECT state FROM own WHERE client_message_id = ?", arguments: [clientMessageID])).flatMap(OwnState.init(rawValue:))
        }
    }

    /// Remembers chat names and display names (from the server's chat list).
    public func rememberChats(_ chats: [(id: UInt64, name: String, title: String)]) throws {
        try database.write { db in
            for chat in chats {
                try db.execute(sql: "INSERT INTO chats (id, name, title) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, title = excluded.title",
                               arguments: [Int64(chat.id), chat.name, chat.title])
            }
        }
        changes.yield()
    }

    /// The newest message of the user's own in a chat that the server has numbered (what
    /// `/edit` and `/delete` change), if the cache holds one that is not deleted.
    public func newestOwnMessage(chatID: UInt64) throws -> Line? {
        try lines(chatID: chatID, limit: Self.historyPerChat).last { $0.own != nil && $0.sequence != nil && !$0.deleted && !$0.renamed }
    }

    /// Chats with their unread counts (messages of others after what the user has seen). A
    /// chat that messages arrived for before its name is known shows as "chat N".
    public func chats() throws -> [ChatEntry] {
        try database.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO chats (id, name) SELECT chat_id, 'chat ' || chat_id FROM cursors")
            return try Row.fetchAll(db, sql: """
                SELECT c.id, CASE WHEN c.title = '' THEN c.name ELSE c.title END AS shown,
                    (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id AND m.sequence > c.read_through AND m.sender_user_id != ? AND m.change_kind NOT IN (1, 2)) AS unread
                FROM chats c ORDER BY shown
                """, arguments: [Int64(userID)]).map { ChatEntry(id: UInt64($0["id"] as Int64), name: $0["shown"], unread: $0["unread"]) }
        }
    }

    /// Whether some chat is known only by its id (its name must be fetched).
    public func hasUnnamedChats() throws -> Bool {
        try database.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM cursors WHERE chat_id NOT IN (SELECT id FROM chats) OR chat_id IN (SELECT id FROM chats WHERE name = 'chat ' || id))") ?? false
        }
    }

    /// The user has seen everything of the chat up to now.
    public func markRead(chatID: UInt64) throws {
        try database.write { db in
            try db.execute(sql: "UPDATE chats SET read_through = COALESCE((SELECT MAX(sequence) FROM messages WHERE chat_id = ?), 0) WHERE id = ?",
                           arguments: [Int64(chatID), Int64(chatID)])
        }
        changes.yield()
    }

    private static func outboxEntry(_ row: Row) -> OutboxEntry {
        OutboxEntry(position: row["position"], clientMessageID: row["client_message_id"], chatID: UInt64(row["chat_id"] as Int64),
                    text: row["text"], clientSentAtMs: row["client_sent_at_ms"], failure: row["failure"],
                    change: change(kind: row["change_kind"], sequence: row["change_sequence"]))
    }
}
