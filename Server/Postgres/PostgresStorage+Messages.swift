import CourierCore
import Foundation
import PostgresNIO

/// Messages: the batched store transaction, deduplication, history and search.
extension PostgresStorage {
    static let messageColumns = """
        server_message_id, chat_id, sequence, sender_user_id, sender_device_id, client_message_id, text, client_sent_at_ms, accepted_at_ms,
        kind, refers_to, sent_text, edited_at_ms, deleted
        """
    typealias MessageRow = (Int64, Int64, Int64, Int64, Int64, String, String, Int64, Int64, Int32, Int64, String?, Int64, Bool)

    public func storeMessages(_ messages: [StoredMessage], chatID: UInt64, afterSequence: UInt64) async throws(StorageError) -> [StoreOutcome] {
        let storedAt = Date().milliseconds
        return try await transaction { connection in
            guard let last = try await Self.lockChat(connection, chatID, logger: self.logger) else { throw StorageError.notFound("chat \(chatID)") }
            guard last == afterSequence else {
                throw StorageError.sequenceConflict(chatID: chatID, expected: afterSequence, found: last)
            }
            for message in messages where try await !Self.changeIsValid(connection, message, chatID: chatID, logger: self.logger) {
                throw StorageError.invalid("\(message.change.map { "\($0)" } ?? "") does not refer to a message its sender sent in chat \(chatID)")
            }
            let outcomes = try await Self.insertMessages(connection, messages, chatID: chatID, afterSequence: last, copies: [], storedAt: storedAt, logger: self.logger)
            try await Self.applyChanges(connection, outcomes.compactMap(\.added), logger: self.logger)
            return outcomes
        }
    }

    /// One statement in a transaction of its own (`courier_store_batch` does what `writeChat`
    /// does, chat by chat, inside PostgreSQL): three round trips, since its rows count only
    /// once COMMIT has answered (`writeAll`). Writes with test-fault copies take the
    /// statement-by-statement way, which knows them.
    ///
    /// A retry is answered as a duplicate only from here, after this transaction's own commit,
    /// never from a read: the chat's row is locked and updated even when every message is a
    /// duplicate, so the commit is a write that waits for the synchronous standby, and what it
    /// found is replicated before the device hears "ok" (a commit whose wait was cancelled
    /// leaves a row on the primary that a read would find, unreplicated).
    /// Every commit here is durable when it answers (`synchronous_commit` is on).
    public func makeDurable() async throws(StorageError) {}

    public func storeBatch(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
        guard writes.allSatisfy(\.copies.isEmpty) else { return try await storeBatchByStatements(writes) }
        var chats: [Int64] = [], ids: [Int64] = [], users: [Int64] = [], devices: [Int64] = [], clientIDs: [String] = [], texts: [String] = []
        var clientSent: [Int64] = [], accepted: [Int64] = [], kinds: [Int32] = [], refers: [Int64] = []
        var positions: [(write: Int, message: Int)] = []
        for (writeIndex, write) in writes.enumerated() {
            for (messageIndex, message) in write.messages.enumerated() {
                chats.append(write.chatID.database)
                ids.append(message.serverMessageID.database)
                users.append(message.senderUserID.database)
                devices.append(message.senderDeviceID.database)
                clientIDs.append(message.clientMessageID)
                texts.append(message.text)
                clientSent.append(message.clientSentAtMilliseconds)
                accepted.append(message.acceptedAtMilliseconds)
                kinds.append(Int32(message.change?.kind ?? 0))
                refers.append((message.change?.sequence ?? 0).database)
                positions.append((writeIndex, messageIndex))
            }
        }
        let rows = try await writeAll("""
            SELECT * FROM courier_store_batch(\(chats)::BIGINT[], \(ids)::BIGINT[], \(users)::BIGINT[], \(devices)::BIGINT[],
                \(clientIDs)::TEXT[], \(texts)::TEXT[], \(clientSent)::BIGINT[], \(accepted)::BIGINT[], \(Date().milliseconds),
                \(kinds)::INT[], \(refers)::BIGINT[])
            """, as: (Int32, String, Int64?, Int64?, Int64?, Int64?, Int64?, String?, String?, Int64?, Int64?, [Int64]?, String?,
                     Int32?, Int64?, String?, Int64?, Bool?).self)
        var outcomes = writes.map { [StoreOutcome?](repeating: nil, count: $0.messages.count) }
        var members = [Set<UInt64>](repeating: [], count: writes.count)
        var ends = [ChatWriteResult?](repeating: nil, count: writes.count)
        for row in rows {
            guard positions.indices.contains(Int(row.0)) else { throw .unavailable("courier_store_batch answered for message \(row.0) of \(positions.count)") }
            let (write, index) = positions[Int(row.0)]
            if let list = row.11 { members[write] = Set(list.map(\.id)) }
            let message = row.2.map { id in
                StoredMessage(
                    serverMessageID: id.id, chatID: (row.3 ?? 0).id, sequence: (row.4 ?? 0).id, senderUserID: (row.5 ?? 0).id, senderDeviceID: (row.6 ?? 0).id,
                    clientMessageID: row.7 ?? "", text: row.8 ?? "", clientSentAtMilliseconds: row.9 ?? 0, acceptedAtMilliseconds: row.10 ?? 0,
                    change: StoredMessage.change(kind: row.13 ?? 0, sequence: row.14 ?? 0), sentText: row.15, editedAtMilliseconds: row.16 ?? 0, deleted: row.17 ?? false
                )
            }
            switch (row.1, message) {
            case ("stored", let message?): outcomes[write][index] = .stored(message)
            case ("duplicate", let message?): outcomes[write][index] = .duplicate(message)
            case ("conflict", let message?): outcomes[write][index] = .conflict(message)
            case ("not_member", _), ("invalid_change", _): outcomes[write][index] = nil
            case ("no_chat", _): ends[write] = .chatNotFound
            case ("failed", _): ends[write] = .failed(row.12?.hasPrefix("53100") == true ? .full("PostgreSQL: \(row.12!)") : .unavailable("PostgreSQL: \(row.12 ?? "")"))
            default: throw .unavailable("courier_store_batch answered \(row.1) for message \(row.0)")
            }
        }
        return writes.indices.map { write in
            ends[write] ?? .written(outcomes[write], added: outcomes[write].compactMap { $0?.added }, members: members[write])
        }
    }

    /// `storeBatch` a statement at a time: for writes with copies (test faults only).
    func storeBatchByStatements(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
        let storedAt = Date().milliseconds
        return try await transaction { connection in
            var results = [ChatWriteResult](repeating: .chatNotFound, count: writes.count)
            // Chats locked in id order, whatever order the batch has: two nodes storing
            // overlapping batches then wait for each other instead of deadlocking.
            for index in writes.indices.sorted(by: { writes[$0].chatID < writes[$1].chatID }) {
                results[index] = try await Self.writeChat(connection, writes[index], storedAt: storedAt, logger: self.logger)
            }
            return results
        }
    }

    /// One chat's part of a batch, inside a savepoint so that its failure leaves the others.
    /// The chat's row is locked for the rest of the transaction: whichever node writes, this
    /// transaction is the chat's single writer until it ends.
    static func writeChat(_ connection: PostgresConnection, _ write: ChatWrite, storedAt: Int64, logger: Logger) async throws -> ChatWriteResult {
        try await connection.query("SAVEPOINT chat_write", logger: logger)
        do {
            guard let last = try await lockChat(connection, write.chatID, logger: logger) else {
                try await connection.query("RELEASE SAVEPOINT chat_write", logger: logger)
                return .chatNotFound
            }
            var members: Set<UInt64> = []
            for try await userID in try await connection.query("SELECT user_id FROM members WHERE chat_id = \(write.chatID.database)", logger: logger).decode(Int64.self) {
                members.insert(userID.id)
            }
            var accepted: [Bool] = []
            for message in write.messages {
                let valid = try await changeIsValid(connection, message, chatID: write.chatID, logger: logger)
                accepted.append(members.contains(message.senderUserID) && valid)
            }
            let allowed = zip(write.messages, accepted).filter(\.1).map(\.0)
            let outcomes = try await insertMessages(connection, allowed, chatID: write.chatID, afterSequence: last, copies: write.copies, storedAt: storedAt, logger: logger)
            try await applyChanges(connection, outcomes.compactMap(\.added), logger: logger)
            try await connection.query("RELEASE SAVEPOINT chat_write", logger: logger)
            var stored = outcomes.makeIterator()
            return .written(accepted.map { $0 ? stored.next() : nil }, added: outcomes.compactMap(\.added), members: members)
        } catch {
            // A lost connection fails the whole transaction; anything else fails this chat alone.
            try await connection.query("ROLLBACK TO SAVEPOINT chat_write", logger: logger)
            try await connection.query("RELEASE SAVEPOINT chat_write", logger: logger)
            return .failed(storageError(error))
        }
    }

    /// The chat's last sequence, its row locked until the transaction ends; nil: no such chat.
    static func lockChat(_ connection: PostgresConnection, _ chatID: UInt64, logger: Logger) async throws -> UInt64? {
        for try await last in try await connection.query("SELECT last_sequence FROM chats WHERE id = \(chatID.database) FOR UPDATE", logger: logger).decode(Int64.self) {
            return last.id
        }
        return nil
    }

    /// Numbers and inserts messages of one chat after `afterSequence` (its locked last
    /// sequence), with their deduplication keys: the same rules as the embedded store
    /// (`SQLiteStorage.insertMessages`), including the test faults' copies.
    static func insertMessages(_ connection: PostgresConnection, _ messages: [StoredMessage], chatID: UInt64, afterSequence: UInt64, copies: Set<UInt64>, storedAt: Int64, logger: Logger) async throws -> [StoreOutcome] {
        var sequence = afterSequence
        var outcomes: [StoreOutcome] = []
        outcomes.reserveCapacity(messages.count)
        var storedNow: Set<UInt64> = []
        for var message in messages {
            let isCopy = copies.contains(message.serverMessageID)
            // A duplicate within this batch is found here too: its key went in above.
            let existing = try await Self.message(connection, deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID, logger: logger)
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
            // Id 0: the cluster's intake leaves numbering to the database.
            for try await id in try await connection.query("""
                INSERT INTO messages (server_message_id, chat_id, sequence, sender_user_id, sender_device_id,
                    client_message_id, text, client_sent_at_ms, accepted_at_ms, stored_at_ms, kind, refers_to)
                VALUES (COALESCE(NULLIF(\(message.serverMessageID.database), 0), nextval('message_ids')), \(chatID.database), \(sequence.database),
                    \(message.senderUserID.database), \(message.senderDeviceID.database), \(message.clientMessageID), \(message.text),
                    \(message.clientSentAtMilliseconds), \(message.acceptedAtMilliseconds), \(storedAt),
                    \(Int32(message.change?.kind ?? 0)), \((message.change?.sequence ?? 0).database))
                RETURNING server_message_id
                """, logger: logger).decode(Int64.self) {
                message.serverMessageID = id.id
            }
            if !isCopy {
                try await connection.query("""
                    INSERT INTO dedup_keys (device_id, client_message_id, server_message_id)
                    VALUES (\(message.senderDeviceID.database), \(message.clientMessageID), \(message.serverMessageID.database))
                    """, logger: logger)
                if !copies.isEmpty { storedNow.insert(message.serverMessageID) }
            }
            outcomes.append(.stored(message))
        }
        if sequence != afterSequence {
            try await connection.query("UPDATE chats SET last_sequence = \(sequence.database) WHERE id = \(chatID.database)", logger: logger)
        }
        return outcomes
    }

    /// Whether an edit or a delete refers to a message (not a change) its sender sent in the
    /// chat (as `SQLiteStorage.changeIsValid`); anything else is valid.
    static func changeIsValid(_ connection: PostgresConnection, _ message: StoredMessage, chatID: UInt64, logger: Logger) async throws -> Bool {
        guard let sequence = message.change?.sequence else { return true }
        for try await (sender, kind) in try await connection.query("""
            SELECT sender_user_id, kind FROM messages WHERE chat_id = \(chatID.database) AND sequence = \(sequence.database)
            """, logger: logger).decode((Int64, Int32).self) {
            return sender.id == message.senderUserID && kind == 0
        }
        return false
    }

    /// Carries out the changes among newly stored entries, in order (as `courier_store_batch`
    /// does); the search column follows `text` by itself.
    static func applyChanges(_ connection: PostgresConnection, _ entries: [StoredMessage], logger: Logger) async throws {
        for entry in entries {
            switch entry.change {
            case nil:
                continue
            case .edit(let sequence)?:
                try await connection.query("""
                    UPDATE messages SET sent_text = coalesce(sent_text, text), text = \(entry.text), edited_at_ms = \(entry.acceptedAtMilliseconds)
                    WHERE chat_id = \(entry.chatID.database) AND sequence = \(sequence.database) AND NOT deleted
                    """, logger: logger)
            case .delete(let sequence)?:
                try await connection.query("""
                    UPDATE messages SET text = '', sent_text = NULL, deleted = true WHERE chat_id = \(entry.chatID.database) AND sequence = \(sequence.database)
                    """, logger: logger)
            case .rename?:
                try await connection.query("UPDATE chats SET title = \(entry.text) WHERE id = \(entry.chatID.database)", logger: logger)
            }
        }
    }

    public func maxServerMessageID() async throws(StorageError) -> UInt64 {
        try await readOne("SELECT MAX(server_message_id) FROM messages", as: Int64?.self)??.id ?? 0
    }

    public func forEachDedupKey(_ body: @escaping @Sendable (UInt64, String) -> Void) async throws(StorageError) {
        do {
            // Streamed: a busy cluster holds millions.
            for try await (deviceID, clientMessageID) in try await client.query("SELECT device_id, client_message_id FROM dedup_keys", logger: logger).decode((Int64, String).self) {
                body(deviceID.id, clientMessageID)
            }
        } catch {
            throw Self.storageError(error)
        }
    }

    public func message(deviceID: UInt64, clientMessageID: String) async throws(StorageError) -> StoredMessage? {
        try await bounded("a message by its client id") { [client, logger] () async throws(StorageError) -> StoredMessage? in
            do {
                return try await client.withConnection { connection in
                    try await Self.message(connection, deviceID: deviceID, clientMessageID: clientMessageID, logger: logger)
                }
            } catch {
                throw Self.storageError(error)
            }
        }
    }

    static func message(_ connection: PostgresConnection, deviceID: UInt64, clientMessageID: String, logger: Logger) async throws -> StoredMessage? {
        let rows = try await connection.query("""
            SELECT \(unescaped: messageColumns.split(separator: ",").map { "m." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", "))
            FROM dedup_keys k JOIN messages m ON m.server_message_id = k.server_message_id
            WHERE k.device_id = \(deviceID.database) AND k.client_message_id = \(clientMessageID)
            """, logger: logger)
        for try await row in rows.decode(MessageRow.self) { return storedMessage(row) }
        return nil
    }

    public func history(chatID: UInt64, afterSequence: UInt64, limit: Int) async throws(StorageError) -> [StoredMessage] {
        try await readAll("""
            SELECT \(unescaped: Self.messageColumns) FROM messages
            WHERE chat_id = \(chatID.database) AND sequence > \(afterSequence.database) ORDER BY sequence LIMIT \(max(0, limit))
            """, as: MessageRow.self).map(Self.storedMessage)
    }

    public func history(chatID: UInt64, beforeSequence: UInt64, limit: Int) async throws(StorageError) -> [StoredMessage] {
        try await readAll("""
            SELECT \(unescaped: Self.messageColumns) FROM (
                SELECT * FROM messages WHERE chat_id = \(chatID.database) AND sequence < \(beforeSequence.database) ORDER BY sequence DESC LIMIT \(max(0, limit))
            ) newest ORDER BY sequence
            """, as: MessageRow.self).map(Self.storedMessage)
    }

    /// Whole words (PostgreSQL's 'simple' configuration: lower-cased, no stemming), every word
    /// required, best first by `ts_rank`. The words go through `plainto_tsquery`, so operators
    /// and punctuation in them are plain text.
    public func search(words: String, userID: UInt64?, chatID: UInt64?, limit: Int) async throws(StorageError) -> [SearchHit] {
        let query = try StorageRules.searchWords(words).joined(separator: " ")
        let columns = Self.messageColumns.split(separator: ",").map { "m." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")
        let rows = try await writeAll("""
            SELECT \(unescaped: columns), c.name, u.name,
                   ts_headline('simple', m.text, q, 'StartSel=[, StopSel=], MaxWords=12, MinWords=4, ShortWord=0, MaxFragments=1, FragmentDelimiter=…')
            FROM messages m
            CROSS JOIN plainto_tsquery('simple', \(query)) q
            JOIN chats c ON c.id = m.chat_id
            JOIN users u ON u.id = m.sender_user_id
            WHERE m.search @@ q AND m.kind = 0
              AND (\(userID?.database)::BIGINT IS NULL OR m.chat_id IN (SELECT chat_id FROM members WHERE user_id = \(userID?.database)))
              AND (\(chatID?.database)::BIGINT IS NULL OR m.chat_id = \(chatID?.database))
            ORDER BY ts_rank(m.search, q) DESC, m.server_message_id DESC
            LIMIT \(max(0, limit))
            """, as: (Int64, Int64, Int64, Int64, Int64, String, String, Int64, Int64, Int32, Int64, String?, Int64, Bool, String, String, String).self)
        return rows.map { row in
            SearchHit(
                message: Self.storedMessage((row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10, row.11, row.12, row.13)),
                chatName: row.14, senderName: row.15, snippet: row.16
            )
        }
    }

    static func storedMessage(_ row: MessageRow) -> StoredMessage {
        StoredMessage(
            serverMessageID: row.0.id, chatID: row.1.id, sequence: row.2.id, senderUserID: row.3.id, senderDeviceID: row.4.id,
            clientMessageID: row.5, text: row.6, clientSentAtMilliseconds: row.7, acceptedAtMilliseconds: row.8,
            change: StoredMessage.change(kind: row.9, sequence: row.10), sentText: row.11, editedAtMilliseconds: row.12, deleted: row.13
        )
    }
}
