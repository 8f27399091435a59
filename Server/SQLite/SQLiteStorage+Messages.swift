import CourierCore
import Foundation
import GRDB

/// Messages: the consumers' batched store transaction, deduplication, history and search.
extension SQLiteStorage {
    public func storeMessages(_ messages: [StoredMessage], chatID: UInt64, afterSequence: UInt64) async throws(StorageError) -> [StoreOutcome] {
        let storedAt = Date().milliseconds
        return try await write { [chatStates] db in
            chatStates.forget(chatID)
            guard let last = try Self.lastSequence(db, chatID: chatID) else { throw StorageError.notFound("chat \(chatID)") }
            guard last == afterSequence else {
                throw StorageError.sequenceConflict(chatID: chatID, expected: afterSequence, found: last)
            }
            for message in messages where try !Self.changeIsValid(db, message, chatID: chatID) {
                throw StorageError.invalid("\(message.change.map { "\($0)" } ?? "") does not refer to a message its sender sent in chat \(chatID)")
            }
            let outcomes = try Self.insertMessages(db, messages, chatID: chatID, afterSequence: last, copies: [], storedAt: storedAt)
            try Self.queueForSearch(db, outcomes.compactMap(\.added))
            try Self.applyChanges(db, outcomes.compactMap(\.added))
            return outcomes
        }
    }

    public func storeBatch(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
        let storedAt = Date().milliseconds
        // A NORMAL commit (no sync): `makeDurable` syncs many of these at once. Until then
        // the log holds every message of the batch, since its offset is not committed.
        return try await onWriterThread {
            try pool.writeWithoutTransaction { db in
                var results: [ChatWriteResult] = []
                results.reserveCapacity(writes.count)
                // IMMEDIATE: the write lock from the start, so no other process commits between
                // the `data_version` read and this transaction's writes.
                do {
                    var known: ChatStates.StoreTransaction?
                    try db.inPreparedTransaction {
                        known = chatStates.begin(dataVersion: try Self.dataVersion(db))
                        for write in writes { results.append(try Self.writeChatUnguarded(db, write, storedAt: storedAt, known: &known)) }
                    }
                    known?.committed()
                    return results
                } catch is ChatPartFailed {
                    // Rolled back whole: written again with each chat's part in a savepoint,
                    // from what the database holds.
                    results.removeAll(keepingCapacity: true)
                }
                // GRDB's own transaction here: a chat's failure is caught and the loop goes on,
                // and should SQLite have rolled the whole transaction back (a full disk), GRDB
                // fails the later chats' statements instead of letting each commit alone.
                try db.inTransaction(.immediate) {
                    for write in writes {
                        chatStates.forget(write.chatID)
                        results.append(Self.writeChat(db, write, storedAt: storedAt))
                    }
                    return .commit
                }
                return results
            }
        }
    }

    /// A chat's part failed in a transaction without savepoints; it is rolled back whole.
    private struct ChatPartFailed: Error {}

    /// One chat's part of a batch without a savepoint of its own: the common case, where no
    /// part fails, spares each chat a SAVEPOINT and a RELEASE (GRDB prepares both anew each
    /// time: a fifth of what a one-message part cost). Any failure is `ChatPartFailed`, and
    /// `storeBatch` writes the batch again with `writeChat`, whose savepoints keep one chat's
    /// failure from the others.
    private static func writeChatUnguarded(_ db: Database, _ write: ChatWrite, storedAt: Int64, known: inout ChatStates.StoreTransaction?) throws -> ChatWriteResult {
        do {
            return try writeChatPart(db, write, storedAt: storedAt, unlooked: write.copies.isEmpty ? write.unseenKeys : [], known: &known)
        } catch {
            throw ChatPartFailed()
        }
    }

    /// Syncs the write-ahead log file from a thread of its own, without SQLite's write lock: a
    /// NORMAL commit has written its frames into the log file before it returned, so one
    /// fdatasync of the file makes every such commit durable, while the writer goes on storing
    /// (a FULL commit held the writer for the whole sync, and at load every store transaction
    /// waited behind it). Frames a checkpoint copied into the database file stay in the log
    /// file until a checkpoint completes, and SQLite syncs the database file before that.
    ///
    /// Only the log file is opened here, never the database file: closing any descriptor of a
    /// file drops every POSIX lock the process holds on it, SQLite's included.
    public func makeDurable() async throws(StorageError) {
        try await indexQueuedForSearch()
        let file = path + "-wal"
        let failure: String? = await withTaskExecutorPreference(syncThread) {
            let descriptor = open(file, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                // No log file: the last checkpoint put (and synced) everything in the database.
                return errno == ENOENT ? nil : "open \(file): \(String(cString: strerror(errno)))"
            }
            defer { close(descriptor) }
            return fdatasync(descriptor) == 0 ? nil : "fdatasync \(file): \(String(cString: strerror(errno)))"
        }
        if let failure { throw .unavailable(failure) }
    }

    /// One chat's part of a batch, inside a savepoint so that its failure leaves the others.
    /// Keys the write says were never seen are not looked up first (with a test fault's copies,
    /// every key is); if one was stored after all (a device's retry appended twice, one key
    /// twice in the batch), its key's uniqueness stops the insert, and the chat's part is
    /// written again with every key looked up.
    static func writeChat(_ db: Database, _ write: ChatWrite, storedAt: Int64) -> ChatWriteResult {
        do {
            return try writeChat(db, write, storedAt: storedAt, unlooked: write.copies.isEmpty ? write.unseenKeys : [])
        } catch is KeyStoredAfterAll {
            do { return try writeChat(db, write, storedAt: storedAt, unlooked: []) } catch { return .failed(storageError(error)) }
        } catch {
            return .failed(storageError(error))
        }
    }

    /// A key `insertMessages` did not look up was in the table: the savepoint is rolled back.
    struct KeyStoredAfterAll: Error {}

    /// Runs an insert of `insertMessages`; for a message whose key was not looked up, a
    /// uniqueness failure is `KeyStoredAfterAll`.
    private static func insert(_ statement: Statement, _ arguments: StatementArguments, lookedUp: Bool) throws {
        do {
            try statement.execute(arguments: arguments)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT && !lookedUp {
            throw KeyStoredAfterAll()
        }
    }

    /// Reads the chat's state from the database, never from `ChatStates`: what a savepoint
    /// rolls back could not be taken back out of it.
    private static func writeChat(_ db: Database, _ write: ChatWrite, storedAt: Int64, unlooked: Set<UInt64>) throws -> ChatWriteResult {
        var result = ChatWriteResult.chatNotFound
        var unknown: ChatStates.StoreTransaction?
        try db.inSavepoint {
            result = try writeChatPart(db, write, storedAt: storedAt, unlooked: unlooked, known: &unknown)
            return .commit
        }
        return result
    }

    /// One chat's part of a batch, in whatever transaction or savepoint the caller holds. The
    /// chat's members and last sequence come from `known` when it has them (and go back into
    /// it), else from the database.
    private static func writeChatPart(_ db: Database, _ write: ChatWrite, storedAt: Int64, unlooked: Set<UInt64>, known: inout ChatStates.StoreTransaction?) throws -> ChatWriteResult {
        let state: ChatStates.State
        if let kept = known?.state(of: write.chatID) {
            state = kept
        } else {
            guard let last = try lastSequence(db, chatID: write.chatID) else { return .chatNotFound }
            let members = try Int64.fetchAll(db.cachedStatement(sql: "SELECT user_id FROM members WHERE chat_id = ?"), arguments: [Int64(clamping: write.chatID)])
            state = ChatStates.State(members: Set(members.map { UInt64($0) }), lastSequence: last)
        }
        let accepted = try write.messages.map { message in
            guard state.members.contains(message.senderUserID) else { return false }
            return try changeIsValid(db, message, chatID: write.chatID)
        }
        let allowed = zip(write.messages, accepted).filter(\.1).map(\.0)
        let outcomes = try insertMessages(db, allowed, chatID: write.chatID, afterSequence: state.lastSequence, copies: write.copies, unlooked: unlooked, storedAt: storedAt)
        let added = outcomes.compactMap(\.added)
        try queueForSearch(db, added)
        try applyChanges(db, added)
        known?.set(ChatStates.State(members: state.members, lastSequence: added.last?.sequence ?? state.lastSequence), of: write.chatID)
        var stored = outcomes.makeIterator()
        return .written(accepted.map { $0 ? stored.next() : nil }, added: added, members: state.members)
    }

    /// SQLite's count of commits by other connections (other processes: this one writes
    /// through one connection), read by the writer.
    static func dataVersion(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "PRAGMA data_version")) ?? 0
    }

    /// Queues newly stored messages for the search index, in their store transaction; a change
    /// is not indexed itself (an edit re-indexes the message it edits, `applyChanges`). FTS5
    /// writes a segment of its own at every transaction that indexes anything, about 6 of the
    /// 12 pages a one-message store transaction wrote, so the index is written in batches
    /// instead (`indexQueuedForSearch`): a queue row is one small append.
    static func queueForSearch(_ db: Database, _ messages: [StoredMessage]) throws {
        guard messages.contains(where: { $0.change == nil }) else { return }
        let queue = try db.cachedStatement(sql: "INSERT INTO search_queue (message_id) VALUES (?)")
        for message in messages where message.change == nil { try queue.execute(arguments: [Int64(message.serverMessageID)]) }
    }

    /// Indexes every queued message, with its text as it is now (a deleted one not at all), in
    /// one transaction, and empties the queue. `makeDurable` runs it before its sync, so search
    /// lags the store by at most the consumers' commit interval (250 ms); a crash leaves the
    /// queue to the next run. The queue holds what was stored since the last run.
    func indexQueuedForSearch() async throws(StorageError) {
        try await write { db in try Self.indexQueuedForSearch(db) }
    }

    static func indexQueuedForSearch(_ db: Database) throws {
        try db.execute(sql: """
            INSERT INTO message_search (rowid, text)
            SELECT m.server_message_id, m.text FROM search_queue q JOIN messages m ON m.server_message_id = q.message_id
            WHERE m.deleted = 0;
            DELETE FROM search_queue;
            """)
    }

    private static func isQueuedForSearch(_ db: Database, _ messageID: Int64) throws -> Bool {
        try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM search_queue WHERE message_id = ?"), arguments: [messageID]) ?? false
    }

    /// Whether `message`, if it is an edit or a delete, refers to a message (not a change) that
    /// its sender sent in the chat. The gateway refuses the others before they reach the log;
    /// a writer never applies one, whatever reached it.
    static func changeIsValid(_ db: Database, _ message: StoredMessage, chatID: UInt64) throws -> Bool {
        guard let sequence = message.change?.sequence else { return true }
        let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT sender_user_id, kind FROM messages WHERE chat_id = ? AND sequence = ?"),
                                   arguments: [Int64(clamping: chatID), Int64(clamping: sequence)])
        guard let row else { return false }
        return UInt64(row[0] as Int64) == message.senderUserID && (row[1] as Int64) == 0
    }

    /// Carries out the changes among newly stored entries, in their order: an edit replaces
    /// its message's text (keeping the text as sent) and search entry, a delete empties both,
    /// a rename sets the chat's display name. A deleted message stays deleted.
    static func applyChanges(_ db: Database, _ entries: [StoredMessage]) throws {
        for entry in entries {
            guard let change = entry.change else { continue }
            if change == .rename {
                try db.cachedStatement(sql: "UPDATE chats SET title = ? WHERE id = ?").execute(arguments: [entry.text, Int64(entry.chatID)])
                continue
            }
            guard let sequence = change.sequence,
                  let target = try Row.fetchOne(db.cachedStatement(sql: "SELECT server_message_id, text FROM messages WHERE chat_id = ? AND sequence = ? AND deleted = 0"),
                                                arguments: [Int64(entry.chatID), Int64(clamping: sequence)])
            else { continue }
            let targetID: Int64 = target[0]
            // A message still queued is indexed later with its text as it is then; one indexed
            // already has its entry replaced now. External-content FTS5 removes an entry only
            // by repeating the text it was indexed with, so a 'delete' for a message never
            // indexed would damage the index.
            let indexed = try !isQueuedForSearch(db, targetID)
            if indexed {
                try db.cachedStatement(sql: "INSERT INTO message_search (message_search, rowid, text) VALUES ('delete', ?, ?)")
                    .execute(arguments: [targetID, target[1] as String])
            }
            if case .edit = change {
                try db.cachedStatement(sql: "UPDATE messages SET sent_text = COALESCE(sent_text, text), text = ?, edited_at_ms = ? WHERE server_message_id = ?")
                    .execute(arguments: [entry.text, entry.acceptedAtMilliseconds, targetID])
                if indexed { try db.cachedStatement(sql: "INSERT INTO message_search (rowid, text) VALUES (?, ?)").execute(arguments: [targetID, entry.text]) }
            } else {
                try db.cachedStatement(sql: "UPDATE messages SET text = '', sent_text = NULL, deleted = 1 WHERE server_message_id = ?").execute(arguments: [targetID])
            }
        }
    }

    /// A chat's last sequence is the highest stored, found in the (chat, sequence) index that
    /// every insert writes anyway: a column of its own in `chats` cost every store transaction
    /// one more page. Rows are never removed (a deleted message keeps its row, emptied), so
    /// the highest never goes back; `c` is the chats table.
    static let lastSequenceSQL = "SELECT COALESCE(MAX(s.sequence), 0) FROM messages s WHERE s.chat_id = c.id"

    /// The chat's last sequence; nil when there is no such chat.
    static func lastSequence(_ db: Database, chatID: UInt64) throws -> UInt64? {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT (\(lastSequenceSQL)) FROM chats c WHERE c.id = ?"), arguments: [Int64(clamping: chatID)])
            .map { UInt64($0) }
    }

    /// Numbers and inserts messages of one chat after `afterSequence` (its stored last sequence),
    /// with their deduplication keys (see `storeMessages`); the caller indexes them for search.
    /// `unlooked`: server message ids whose keys are not looked up first; one of them found
    /// stored when it or its key is inserted throws `KeyStoredAfterAll`.
    static func insertMessages(_ db: Database, _ messages: [StoredMessage], chatID: UInt64, afterSequence: UInt64, copies: Set<UInt64>, unlooked: Set<UInt64> = [], storedAt: Int64) throws -> [StoreOutcome] {
        var sequence = afterSequence
        var outcomes: [StoreOutcome] = []
        outcomes.reserveCapacity(messages.count)
        let insertMessage = try db.cachedStatement(sql: """
            INSERT INTO messages (server_message_id, chat_id, sequence, sender_user_id, sender_device_id,
                client_message_id, text, client_sent_at_ms, accepted_at_ms, stored_at_ms, kind, refers_to)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        let insertKey = try db.cachedStatement(sql: "INSERT INTO dedup_keys (device_id, client_message_id, server_message_id) VALUES (?, ?, ?)")
        // Server message ids stored by this call, for telling a copy from a replay's copy.
        var storedNow: Set<UInt64> = []
        for var message in messages {
            let isCopy = copies.contains(message.serverMessageID)
            // A duplicate within this batch is found here too: its key went in above.
            let lookedUp = !unlooked.contains(message.serverMessageID)
            let existing = lookedUp ? try Self.message(db, deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID) : nil
            if isCopy, existing.map({ !storedNow.contains($0.serverMessageID) }) ?? true {
                outcomes.append(.duplicate(existing ?? message))
                continue
            }
            if let existing, !isCopy {
                let same = existing.isSameSend(chatID: chatID, text: message.text, change: message.change)
                outcomes.append(same ? .duplicate(existing) : .conflict(existing))
                continue
            }
            sequence += 1
            message.chatID = chatID
            message.sequence = sequence
            // Unlooked, the message (a replay) or its key (a retry) may be stored already.
            try insert(insertMessage, [
                Int64(message.serverMessageID), Int64(chatID), Int64(sequence), Int64(message.senderUserID),
                Int64(message.senderDeviceID), message.clientMessageID, message.text, message.clientSentAtMilliseconds,
                message.acceptedAtMilliseconds, storedAt, Int64(message.change?.kind ?? 0), Int64(clamping: message.change?.sequence ?? 0),
            ], lookedUp: lookedUp)
            if !isCopy {
                try insert(insertKey, [Int64(message.senderDeviceID), message.clientMessageID, Int64(message.serverMessageID)], lookedUp: lookedUp)
                if !copies.isEmpty { storedNow.insert(message.serverMessageID) }
            }
            outcomes.append(.stored(message))
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

    static func message(_ db: Database, deviceID: UInt64, clientMessageID: String) throws -> StoredMessage? {
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
        try StorageRules.searchWords(words).map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }.joined(separator: " ")
    }
}
