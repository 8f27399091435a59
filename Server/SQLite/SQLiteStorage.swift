import CourierCore
import Foundation
import GRDB

/// The embedded storage: one SQLite database in WAL mode in the data directory, with FTS5 for
/// search. Safe to open from the admin commands while the server runs: SQLite locks across
/// processes, and WAL lets readers run beside the one writer.
public final class SQLiteStorage: ServerStorage {
    public let path: String
    private let pool: DatabasePool

    /// Opens (creating and migrating if needed) the database at `path`.
    public init(path: String) throws(StorageError) {
        self.path = path
        var configuration = Configuration()
        // Another process (an admin command, a second server) may hold the write lock briefly.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // NORMAL: a commit does not wait for fsync. The log is the source of truth, and the
            // consumers' store transactions commit FULL (syncing every commit before them)
            // before any offset is committed, so nothing is lost.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
        } catch {
            throw Self.storageError(error)
        }
    }

    public func appliedMigrations() throws(StorageError) -> [String] {
        do { return try pool.read { try Self.migrator.appliedMigrations($0) } } catch { throw Self.storageError(error) }
    }

    // MARK: - Accounts

    public func createUser(name: String) async throws(StorageError) -> User {
        let name = try Self.validName(name, of: "user")
        let now = Date()
        return try await write { db in
            User(id: try Self.insertUser(db, name: name, at: now), name: name, createdAt: Date(milliseconds: now.milliseconds))
        }
    }

    /// Inserts a user with a valid name; `.alreadyExists` when the name is taken.
    static func insertUser(_ db: Database, name: String, at now: Date) throws -> UInt64 {
        try insert(db, "INSERT INTO users (name, created_at_ms) VALUES (?, ?)", [name, now.milliseconds], taken: "user \(name)")
    }

    /// Runs an INSERT and returns the new row's id; a constraint failure is `.alreadyExists(taken)`.
    private static func insert(_ db: Database, _ sql: String, _ arguments: StatementArguments, taken: String) throws -> UInt64 {
        do {
            try db.cachedStatement(sql: sql).execute(arguments: arguments)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw StorageError.alreadyExists(taken)
        }
        return UInt64(db.lastInsertedRowID)
    }

    public func user(id: UInt64) async throws(StorageError) -> User {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM users WHERE id = ?", arguments: [Int64(clamping: id)]) else {
                throw StorageError.notFound("user \(id)")
            }
            return Self.user(row)
        }
    }

    public func user(named name: String) async throws(StorageError) -> User {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM users WHERE name = ?", arguments: [name]) else {
                throw StorageError.notFound("user \(name)")
            }
            return Self.user(row)
        }
    }

    public func listUsers() async throws(StorageError) -> [User] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM users ORDER BY id").map(Self.user) }
    }

    public func createDevice(userID: UInt64, name: String) async throws(StorageError) -> Device {
        let name = try Self.validName(name, of: "device")
        let now = Date()
        return try await write { db in
            guard try Int64.fetchOne(db, sql: "SELECT id FROM users WHERE id = ?", arguments: [Int64(clamping: userID)]) != nil else {
                throw StorageError.notFound("user \(userID)")
            }
            let id = try Self.insertDevice(db, userID: userID, name: name, at: now)
            return Device(id: id, userID: userID, name: name, createdAt: Date(milliseconds: now.milliseconds))
        }
    }

    /// Inserts a device with a valid name for an existing user; `.alreadyExists` when the user
    /// has a device of that name.
    static func insertDevice(_ db: Database, userID: UInt64, name: String, at now: Date) throws -> UInt64 {
        try insert(db, "INSERT INTO devices (user_id, name, created_at_ms) VALUES (?, ?, ?)", [Int64(userID), name, now.milliseconds], taken: "device \(name) of user \(userID)")
    }

    public func devices(ofUser userID: UInt64) async throws(StorageError) -> [Device] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM devices WHERE user_id = ? ORDER BY id", arguments: [Int64(clamping: userID)]).map(Self.device)
        }
    }

    public func device(id: UInt64) async throws(StorageError) -> Device {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM devices WHERE id = ?", arguments: [Int64(clamping: id)]) else {
                throw StorageError.notFound("device \(id)")
            }
            return Self.device(row)
        }
    }

    // MARK: - Tokens

    public func issueToken(deviceID: UInt64, expiresAt: Date?) async throws(StorageError) -> IssuedToken {
        let now = Date()
        return try await write { db in
            guard let userID = try Int64.fetchOne(db, sql: "SELECT user_id FROM devices WHERE id = ?", arguments: [Int64(clamping: deviceID)]) else {
                throw StorageError.notFound("device \(deviceID)")
            }
            let token = try Self.insertToken(db, deviceID: deviceID, expiresAt: expiresAt, at: now)
            return IssuedToken(token: token, userID: UInt64(userID), deviceID: deviceID, expiresAt: expiresAt)
        }
    }

    /// Issues a new token for an existing device: stores its hash, returns the token.
    static func insertToken(_ db: Database, deviceID: UInt64, expiresAt: Date?, at now: Date) throws -> String {
        let token = DeviceToken.generate()
        try db.cachedStatement(sql: "INSERT INTO tokens (hash, device_id, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?)")
            .execute(arguments: [Data(DeviceToken.hash(token)), Int64(deviceID), now.milliseconds, expiresAt?.milliseconds])
        return token
    }

    public func authenticate(token: String, now: Date) async throws(StorageError) -> TokenIdentity? {
        guard token.utf8.count <= DeviceToken.maxLength else { return nil }
        let hash = DeviceToken.hash(token)
        return try readOneStatement { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: """
                SELECT d.user_id, t.device_id, t.expires_at_ms FROM tokens t JOIN devices d ON d.id = t.device_id
                WHERE t.hash = ? AND t.revoked_at_ms IS NULL
                """), arguments: [Data(hash)]) else { return nil }
            let expires: Int64? = row["expires_at_ms"]
            if let expires, expires <= now.milliseconds { return nil }
            return TokenIdentity(userID: UInt64(row["user_id"] as Int64), deviceID: UInt64(row["device_id"] as Int64), expiresAt: expires.map { Date(milliseconds: $0) })
        }
    }

    public func revokeToken(_ token: String, now: Date) async throws(StorageError) -> Bool {
        let hash = DeviceToken.hash(token)
        return try await write { db in
            try db.execute(sql: "UPDATE tokens SET revoked_at_ms = ? WHERE hash = ? AND revoked_at_ms IS NULL", arguments: [now.milliseconds, Data(hash)])
            return db.changesCount > 0
        }
    }

    public func revokeTokens(deviceID: UInt64, now: Date) async throws(StorageError) -> Int {
        try await write { db in
            try db.execute(sql: "UPDATE tokens SET revoked_at_ms = ? WHERE device_id = ? AND revoked_at_ms IS NULL", arguments: [now.milliseconds, Int64(clamping: deviceID)])
            return db.changesCount
        }
    }

    // MARK: - Chats

    public func createChat(name: String, memberIDs: [UInt64]) async throws(StorageError) -> Chat {
        let name = try Self.validName(name, of: "chat")
        let now = Date()
        return try await write { db in
            let chat = Chat(id: try Self.insertChat(db, name: name, at: now), name: name, createdAt: Date(milliseconds: now.milliseconds), lastSequence: 0)
            // A missing user throws, and the transaction takes the chat back with it.
            for userID in Set(memberIDs) { try Self.insertMember(db, chatID: chat.id, userID: userID, at: now) }
            return chat
        }
    }

    /// Inserts a chat with a valid name; `.alreadyExists` when the name is taken.
    static func insertChat(_ db: Database, name: String, at now: Date) throws -> UInt64 {
        try insert(db, "INSERT INTO chats (name, created_at_ms) VALUES (?, ?)", [name, now.milliseconds], taken: "chat \(name)")
    }

    public func chat(id: UInt64) async throws(StorageError) -> Chat {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM chats WHERE id = ?", arguments: [Int64(clamping: id)]) else {
                throw StorageError.notFound("chat \(id)")
            }
            return Self.chat(row)
        }
    }

    public func chat(named name: String) async throws(StorageError) -> Chat {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM chats WHERE name = ?", arguments: [name]) else {
                throw StorageError.notFound("chat \(name)")
            }
            return Self.chat(row)
        }
    }

    public func addMember(chatID: UInt64, userID: UInt64) async throws(StorageError) {
        let now = Date()
        try await write { db in
            guard try Int64.fetchOne(db, sql: "SELECT id FROM chats WHERE id = ?", arguments: [Int64(clamping: chatID)]) != nil else {
                throw StorageError.notFound("chat \(chatID)")
            }
            try Self.insertMember(db, chatID: chatID, userID: userID, at: now)
        }
    }

    /// Adds a member to an existing chat; adding one twice changes nothing.
    /// Returns whether the user was not a member before.
    @discardableResult
    static func insertMember(_ db: Database, chatID: UInt64, userID: UInt64, at now: Date) throws -> Bool {
        guard try Int64.fetchOne(db.cachedStatement(sql: "SELECT id FROM users WHERE id = ?"), arguments: [Int64(clamping: userID)]) != nil else {
            throw StorageError.notFound("user \(userID)")
        }
        try db.cachedStatement(sql: "INSERT INTO members (chat_id, user_id, joined_at_ms) VALUES (?, ?, ?) ON CONFLICT (chat_id, user_id) DO NOTHING")
            .execute(arguments: [Int64(chatID), Int64(userID), now.milliseconds])
        return db.changesCount > 0
    }

    public func members(ofChat chatID: UInt64) async throws(StorageError) -> Set<UInt64> {
        try read { db in
            Set(try Int64.fetchAll(db, sql: "SELECT user_id FROM members WHERE chat_id = ?", arguments: [Int64(clamping: chatID)]).map { UInt64($0) })
        }
    }

    public func chats(ofUser userID: UInt64) async throws(StorageError) -> [Chat] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT c.* FROM chats c JOIN members m ON m.chat_id = c.id WHERE m.user_id = ? ORDER BY c.id
                """, arguments: [Int64(clamping: userID)]).map(Self.chat)
        }
    }

    public func listChats() async throws(StorageError) -> [ChatSummary] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM chats ORDER BY id").map { try Self.summary(db, Self.chat($0), maxMemberNames: nil) }
        }
    }

    public func chatSummaries(ofUser userID: UInt64, afterChatID: UInt64, limit: Int, maxMemberNames: Int) async throws(StorageError) -> [ChatSummary] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT c.* FROM chats c JOIN members m ON m.chat_id = c.id WHERE m.user_id = ? AND c.id > ? ORDER BY c.id LIMIT ?
                """, arguments: [Int64(clamping: userID), Int64(clamping: afterChatID), max(0, limit)]).map {
                try Self.summary(db, Self.chat($0), maxMemberNames: maxMemberNames)
            }
        }
    }

    public func chatSummary(id: UInt64, maxMemberNames: Int) async throws(StorageError) -> ChatSummary {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM chats WHERE id = ?", arguments: [Int64(clamping: id)]) else {
                throw StorageError.notFound("chat \(id)")
            }
            return try Self.summary(db, Self.chat(row), maxMemberNames: maxMemberNames)
        }
    }

    /// A chat's member names in byte order (the first `maxMemberNames`, or all when nil) and count.
    private static func summary(_ db: Database, _ chat: Chat, maxMemberNames: Int?) throws -> ChatSummary {
        let names = try String.fetchAll(db.cachedStatement(sql: """
            SELECT u.name FROM members m JOIN users u ON u.id = m.user_id WHERE m.chat_id = ? ORDER BY u.name LIMIT ?
            """), arguments: [Int64(chat.id), maxMemberNames.map { max(0, $0) } ?? -1])
        let count = try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM members WHERE chat_id = ?"), arguments: [Int64(chat.id)]) ?? 0
        return ChatSummary(chat: chat, memberNames: names, memberCount: count)
    }

    // MARK: - Messages

    public func storeMessages(_ messages: [StoredMessage], chatID: UInt64, afterSequence: UInt64) async throws(StorageError) -> [StoreOutcome] {
        let storedAt = Date().milliseconds
        return try await write { db in
            guard let last = try Self.lastSequence(db, chatID: chatID) else { throw StorageError.notFound("chat \(chatID)") }
            guard last == afterSequence else {
                throw StorageError.sequenceConflict(chatID: chatID, expected: afterSequence, found: last)
            }
            let outcomes = try Self.insertMessages(db, messages, chatID: chatID, afterSequence: last, copies: [], storedAt: storedAt)
            try Self.indexForSearch(db, outcomes.compactMap(\.added))
            return outcomes
        }
    }

    public func storeBatch(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
        let storedAt = Date().milliseconds
        do {
            return try await pool.writeWithoutTransaction { db in
                // A FULL commit syncs the write-ahead log: this transaction, and every NORMAL
                // one before it, survive a power cut once it returns. One sync per batch.
                try db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute()
                defer { try? db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute() }
                var results: [ChatWriteResult] = []
                results.reserveCapacity(writes.count)
                try db.inTransaction {
                    for write in writes { results.append(Self.writeChat(db, write, storedAt: storedAt)) }
                    // Indexed once for the whole transaction, outside the chats' savepoints: FTS5
                    // would otherwise write a segment at every savepoint's release.
                    for case .written(_, let added, _) in results { try Self.indexForSearch(db, added) }
                    return .commit
                }
                return results
            }
        } catch {
            throw Self.storageError(error)
        }
    }

    /// One chat's part of a batch, inside a savepoint so that its failure leaves the others.
    private static func writeChat(_ db: Database, _ write: ChatWrite, storedAt: Int64) -> ChatWriteResult {
        var result = ChatWriteResult.chatNotFound
        do {
            try db.inSavepoint {
                guard let last = try lastSequence(db, chatID: write.chatID) else { return .commit }
                let members = Set(try Int64.fetchAll(db.cachedStatement(sql: "SELECT user_id FROM members WHERE chat_id = ?"), arguments: [Int64(clamping: write.chatID)]).map { UInt64($0) })
                let allowed = write.messages.filter { members.contains($0.senderUserID) }
                let outcomes = try insertMessages(db, allowed, chatID: write.chatID, afterSequence: last, copies: write.copies, storedAt: storedAt)
                let added = outcomes.compactMap(\.added)
                var stored = outcomes.makeIterator()
                result = .written(write.messages.map { members.contains($0.senderUserID) ? stored.next() : nil }, added: added, members: members)
                return .commit
            }
        } catch {
            result = .failed(storageError(error))
        }
        return result
    }

    /// The full-text entries of newly stored messages (the search index is in the same
    /// transaction as the messages: search never lags behind what devices are told).
    private static func indexForSearch(_ db: Database, _ messages: [StoredMessage]) throws {
        guard !messages.isEmpty else { return }
        let insertSearch = try db.cachedStatement(sql: "INSERT INTO message_search (rowid, text) VALUES (?, ?)")
        for message in messages { try insertSearch.execute(arguments: [Int64(message.serverMessageID), message.text]) }
    }

    private static func lastSequence(_ db: Database, chatID: UInt64) throws -> UInt64? {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT last_sequence FROM chats WHERE id = ?"), arguments: [Int64(clamping: chatID)]).map { UInt64($0) }
    }

    /// Numbers and inserts messages of one chat after `afterSequence` (its stored last sequence),
    /// with their deduplication keys (see `storeMessages`); the caller indexes them for search.
    private static func insertMessages(_ db: Database, _ messages: [StoredMessage], chatID: UInt64, afterSequence: UInt64, copies: Set<UInt64>, storedAt: Int64) throws -> [StoreOutcome] {
        var sequence = afterSequence
        var outcomes: [StoreOutcome] = []
        outcomes.reserveCapacity(messages.count)
        let insertMessage = try db.cachedStatement(sql: """
            INSERT INTO messages (server_message_id, chat_id, sequence, sender_user_id, sender_device_id,
                client_message_id, text, client_sent_at_ms, accepted_at_ms, stored_at_ms)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        let insertKey = try db.cachedStatement(sql: "INSERT INTO dedup_keys (device_id, client_message_id, server_message_id) VALUES (?, ?, ?)")
        // Server message ids stored by this call, for telling a copy from a replay's copy.
        var storedNow: Set<UInt64> = []
        for var message in messages {
            let isCopy = copies.contains(message.serverMessageID)
            // A duplicate within this batch is found here too: its key went in above.
            let existing = try Self.message(db, deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID)
            if isCopy, existing.map({ !storedNow.contains($0.serverMessageID) }) ?? true {
                outcomes.append(.duplicate(existing ?? message))
                continue
            }
            if let existing, !isCopy {
                let same = existing.chatID == chatID && existing.text == message.text
                outcomes.append(same ? .duplicate(existing) : .conflict(existing))
                continue
            }
            sequence += 1
            message.chatID = chatID
            message.sequence = sequence
            try insertMessage.execute(arguments: [
                Int64(message.serverMessageID), Int64(chatID), Int64(sequence), Int64(message.senderUserID),
                Int64(message.senderDeviceID), message.clientMessageID, message.text, message.clientSentAtMilliseconds,
                message.acceptedAtMilliseconds, storedAt,
            ])
            if !isCopy {
                try insertKey.execute(arguments: [Int64(message.senderDeviceID), message.clientMessageID, Int64(message.serverMessageID)])
                if !copies.isEmpty { storedNow.insert(message.serverMessageID) }
            }
            outcomes.append(.stored(message))
        }
        if sequence != afterSequence {
            try db.cachedStatement(sql: "UPDATE chats SET last_sequence = ? WHERE id = ? AND last_sequence = ?")
                .execute(arguments: [Int64(sequence), Int64(chatID), Int64(afterSequence)])
        }
        return outcomes
    }

    public func maxServerMessageID() async throws(StorageError) -> UInt64 {
        try read { db in UInt64(try Int64.fetchOne(db, sql: "SELECT MAX(server_message_id) FROM messages") ?? 0) }
    }

    public func forEachDedupKey(_ body: @escaping @Sendable (UInt64, String) -> Void) async throws(StorageError) {
        try read { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT device_id, client_message_id FROM dedup_keys")
            while let row = try rows.next() { body(UInt64(row[0] as Int64), row[1]) }
        }
    }

    public func message(deviceID: UInt64, clientMessageID: String) async throws(StorageError) -> StoredMessage? {
        try readOneStatement { db in try Self.message(db, deviceID: deviceID, clientMessageID: clientMessageID) }
    }

    private static func message(_ db: Database, deviceID: UInt64, clientMessageID: String) throws -> StoredMessage? {
        try Row.fetchOne(db.cachedStatement(sql: """
            SELECT m.* FROM dedup_keys k JOIN messages m ON m.server_message_id = k.server_message_id
            WHERE k.device_id = ? AND k.client_message_id = ?
            """), arguments: [Int64(clamping: deviceID), clientMessageID]).map(storedMessage)
    }

    public func history(chatID: UInt64, afterSequence: UInt64, limit: Int) async throws(StorageError) -> [StoredMessage] {
        try readOneStatement { db in
            // Cached: every push the live path cannot hand over at once is read back through here.
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT * FROM messages WHERE chat_id = ? AND sequence > ? ORDER BY sequence LIMIT ?
                """), arguments: [Int64(clamping: chatID), Int64(clamping: afterSequence), max(0, limit)]).map(Self.storedMessage)
        }
    }

    public func history(chatID: UInt64, beforeSequence: UInt64, limit: Int) async throws(StorageError) -> [StoredMessage] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM (SELECT * FROM messages WHERE chat_id = ? AND sequence < ? ORDER BY sequence DESC LIMIT ?) ORDER BY sequence
                """, arguments: [Int64(clamping: chatID), Int64(clamping: beforeSequence), max(0, limit)]).map(Self.storedMessage)
        }
    }

    public func search(words: String, userID: UInt64?, chatID: UInt64?, limit: Int) async throws(StorageError) -> [SearchHit] {
        let query = try Self.ftsQuery(words)
        var sql = """
            SELECT m.*, c.name AS chat_name, u.name AS sender_name,
                   snippet(message_search, 0, '[', ']', '…', 12) AS snippet
            FROM message_search
            JOIN messages m ON m.server_message_id = message_search.rowid
            JOIN chats c ON c.id = m.chat_id
            JOIN users u ON u.id = m.sender_user_id
            WHERE message_search MATCH ?
            """
        var arguments: StatementArguments = [query]
        if let userID {
            sql += " AND m.chat_id IN (SELECT chat_id FROM members WHERE user_id = ?)"
            arguments += [Int64(clamping: userID)]
        }
        if let chatID {
            sql += " AND m.chat_id = ?"
            arguments += [Int64(clamping: chatID)]
        }
        sql += " ORDER BY bm25(message_search) LIMIT ?"
        arguments += [max(0, limit)]
        return try read { [sql, arguments] db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                SearchHit(message: Self.storedMessage(row), chatName: row["chat_name"], senderName: row["sender_name"], snippet: row["snippet"])
            }
        }
    }

    /// Words to an FTS5 query that matches messages holding every word as a whole word. Each
    /// word is quoted, so FTS5 operators and punctuation in the input are plain text.
    static func ftsQuery(_ words: String) throws(StorageError) -> String {
        let terms = words.split(whereSeparator: { $0.isWhitespace }).map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        guard !terms.isEmpty else { throw .invalid("search needs at least one word") }
        guard terms.count <= 32, words.utf8.count <= 1024 else { throw .invalid("search is limited to 32 words and 1024 bytes") }
        return terms.joined(separator: " ")
    }

    // MARK: - Delivery

    public func deliveryCursor(deviceID: UInt64, chatID: UInt64) async throws(StorageError) -> UInt64 {
        try read { db in
            UInt64(try Int64.fetchOne(db, sql: "SELECT sequence FROM delivery_cursors WHERE device_id = ? AND chat_id = ?", arguments: [Int64(clamping: deviceID), Int64(clamping: chatID)]) ?? 0)
        }
    }

    public func deliveryCursors(deviceID: UInt64) async throws(StorageError) -> [UInt64: UInt64] {
        try read { db in
            var cursors: [UInt64: UInt64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT chat_id, sequence FROM delivery_cursors WHERE device_id = ?", arguments: [Int64(clamping: deviceID)]) {
                cursors[UInt64(row[0] as Int64)] = UInt64(row[1] as Int64)
            }
            return cursors
        }
    }

    public func memberDeviceCursors(chatID: UInt64, now: Date) async throws(StorageError) -> [MemberDeviceCursor] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT d.user_id, d.id, COALESCE(c.sequence, 0)
                FROM members m
                JOIN devices d ON d.user_id = m.user_id
                LEFT JOIN delivery_cursors c ON c.device_id = d.id AND c.chat_id = m.chat_id
                WHERE m.chat_id = ? AND EXISTS (
                    SELECT 1 FROM tokens t WHERE t.device_id = d.id AND t.revoked_at_ms IS NULL
                    AND (t.expires_at_ms IS NULL OR t.expires_at_ms > ?))
                """, arguments: [Int64(clamping: chatID), now.milliseconds]).map {
                MemberDeviceCursor(userID: UInt64($0[0] as Int64), deviceID: UInt64($0[1] as Int64), sequence: UInt64($0[2] as Int64))
            }
        }
    }

    public func advanceDeliveryCursors(_ cursors: [DeliveryCursor]) async throws(StorageError) {
        guard !cursors.isEmpty else { return }
        try await write { db in
            // Never backwards: a slower write of an older cursor cannot undo a newer one.
            let statement = try db.cachedStatement(sql: """
                INSERT INTO delivery_cursors (device_id, chat_id, sequence) VALUES (?, ?, ?)
                ON CONFLICT (device_id, chat_id) DO UPDATE SET sequence = excluded.sequence WHERE excluded.sequence > delivery_cursors.sequence
                """)
            for cursor in cursors {
                try statement.execute(arguments: [Int64(clamping: cursor.deviceID), Int64(clamping: cursor.chatID), Int64(clamping: cursor.sequence)])
            }
        }
    }

    public func statistics() async throws(StorageError) -> StorageStatistics {
        let now = Date().milliseconds
        return try read { db in
            func count(_ sql: String, _ arguments: StatementArguments = []) throws -> Int { try Int.fetchOne(db, sql: sql, arguments: arguments) ?? 0 }
            return StorageStatistics(
                users: try count("SELECT COUNT(*) FROM users"),
                devices: try count("SELECT COUNT(*) FROM devices"),
                chats: try count("SELECT COUNT(*) FROM chats"),
                messages: try count("SELECT COUNT(*) FROM messages"),
                activeTokens: try count("SELECT COUNT(*) FROM tokens WHERE revoked_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > ?)", [now]),
                schemaVersion: try Self.migrator.appliedMigrations(db).last ?? "none"
            )
        }
    }

    // MARK: - Plumbing

    /// Runs a read on the caller's thread. WAL readers never wait for the writer, and handing
    /// a lookup of microseconds to one of SQLite's threads and back cost two context switches
    /// per read (scripts/bench-cost). Every read goes this way: a reader is then held only
    /// while its caller runs it, never across a suspension, so callers waiting for one of the
    /// pool's readers always see it come back (an async read, released only once its caller
    /// resumed on an event loop that a waiting read was blocking, could deadlock them).
    func read<T>(_ body: (Database) throws -> T) throws(StorageError) -> T {
        do { return try pool.read(body) } catch { throw Self.storageError(error) }
    }

    /// A read of one statement, which needs no transaction around it to see one state of the
    /// database: it spares the BEGIN and COMMIT that `read` adds (the hot reads: token checks,
    /// dedup lookups, history pages).
    func readOneStatement<T>(_ body: (Database) throws -> T) throws(StorageError) -> T {
        do { return try pool.unsafeReentrantRead(body) } catch { throw Self.storageError(error) }
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(StorageError) -> T {
        do { return try await pool.write(body) } catch { throw Self.storageError(error) }
    }

    static func storageError(_ error: any Error) -> StorageError {
        if let error = error as? StorageError { return error }
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_FULL: return .full(error.description)
            case .SQLITE_CONSTRAINT: return .rejected(error.description)
            default: return .unavailable(error.description)
            }
        }
        return .unavailable("\(error)")
    }

    static func validName(_ name: String, of kind: String) throws(StorageError) -> String {
        let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, trimmed.utf8.count <= 64 else { throw .invalid("a \(kind) name is 1-64 bytes") }
        guard !trimmed.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) }) else {
            throw .invalid("a \(kind) name has no control characters")
        }
        return trimmed
    }

    private static func user(_ row: Row) -> User {
        User(id: UInt64(row["id"] as Int64), name: row["name"], createdAt: Date(milliseconds: row["created_at_ms"]))
    }

    private static func device(_ row: Row) -> Device {
        Device(id: UInt64(row["id"] as Int64), userID: UInt64(row["user_id"] as Int64), name: row["name"], createdAt: Date(milliseconds: row["created_at_ms"]))
    }

    private static func chat(_ row: Row) -> Chat {
        Chat(id: UInt64(row["id"] as Int64), name: row["name"], createdAt: Date(milliseconds: row["created_at_ms"]), lastSequence: UInt64(row["last_sequence"] as Int64))
    }

    private static func storedMessage(_ row: Row) -> StoredMessage {
        StoredMessage(
            serverMessageID: UInt64(row["server_message_id"] as Int64),
            chatID: UInt64(row["chat_id"] as Int64),
            sequence: UInt64(row["sequence"] as Int64),
            senderUserID: UInt64(row["sender_user_id"] as Int64),
            senderDeviceID: UInt64(row["sender_device_id"] as Int64),
            clientMessageID: row["client_message_id"],
            text: row["text"],
            clientSentAtMilliseconds: row["client_sent_at_ms"],
            acceptedAtMilliseconds: row["accepted_at_ms"]
        )
    }
}
