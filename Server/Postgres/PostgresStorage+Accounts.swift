import CourierCore
import Foundation
import NIOCore
import PostgresNIO

/// Users, devices, tokens, chats and members, delivery cursors and statistics.
extension PostgresStorage {
    // MARK: - Accounts

    public func createUser(name: String) async throws(StorageError) -> User {
        let name = try StorageRules.validName(name, of: "user")
        let now = Date()
        return try await transaction { connection in
            User(id: try await Self.insertUser(connection, name: name, at: now, logger: self.logger), name: name, createdAt: Date(milliseconds: now.milliseconds))
        }
    }

    /// Runs an INSERT ... RETURNING id; a taken unique name is `.alreadyExists(taken)`.
    static func insert(_ connection: PostgresConnection, _ query: PostgresQuery, taken: String, logger: Logger) async throws -> UInt64 {
        do {
            for try await id in try await connection.query(query, logger: logger).decode(Int64.self) { return id.id }
        } catch let error where isUniqueViolation(error) {
            throw StorageError.alreadyExists(taken)
        }
        throw StorageError.unavailable("PostgreSQL returned no id for \(taken)")
    }

    static func insertUser(_ connection: PostgresConnection, name: String, at now: Date, logger: Logger) async throws -> UInt64 {
        try await insert(connection, "INSERT INTO users (name, created_at_ms) VALUES (\(name), \(now.milliseconds)) RETURNING id", taken: "user \(name)", logger: logger)
    }

    public func user(id: UInt64) async throws(StorageError) -> User {
        guard let user = try await readAll("SELECT id, name, created_at_ms FROM users WHERE id = \(id.database)", as: (Int64, String, Int64).self).first else {
            throw .notFound("user \(id)")
        }
        return Self.user(user)
    }

    public func user(named name: String) async throws(StorageError) -> User {
        guard let user = try await readAll("SELECT id, name, created_at_ms FROM users WHERE name = \(name)", as: (Int64, String, Int64).self).first else {
            throw .notFound("user \(name)")
        }
        return Self.user(user)
    }

    public func listUsers() async throws(StorageError) -> [User] {
        try await readAll("SELECT id, name, created_at_ms FROM users ORDER BY id", as: (Int64, String, Int64).self).map(Self.user)
    }

    public func createDevice(userID: UInt64, name: String) async throws(StorageError) -> Device {
        let name = try StorageRules.validName(name, of: "device")
        let now = Date()
        return try await transaction { connection in
            guard try await Self.exists(connection, "SELECT 1 FROM users WHERE id = \(userID.database)", logger: self.logger) else {
                throw StorageError.notFound("user \(userID)")
            }
            let id = try await Self.insertDevice(connection, userID: userID, name: name, at: now, logger: self.logger)
            return Device(id: id, userID: userID, name: name, createdAt: Date(milliseconds: now.milliseconds))
        }
    }

    static func insertDevice(_ connection: PostgresConnection, userID: UInt64, name: String, at now: Date, logger: Logger) async throws -> UInt64 {
        try await insert(
            connection, "INSERT INTO devices (user_id, name, created_at_ms) VALUES (\(userID.database), \(name), \(now.milliseconds)) RETURNING id",
            taken: "device \(name) of user \(userID)", logger: logger
        )
    }

    public func devices(ofUser userID: UInt64) async throws(StorageError) -> [Device] {
        try await readAll("SELECT id, user_id, name, created_at_ms FROM devices WHERE user_id = \(userID.database) ORDER BY id", as: (Int64, Int64, String, Int64).self).map(Self.device)
    }

    public func device(id: UInt64) async throws(StorageError) -> Device {
        guard let device = try await readAll("SELECT id, user_id, name, created_at_ms FROM devices WHERE id = \(id.database)", as: (Int64, Int64, String, Int64).self).first else {
            throw .notFound("device \(id)")
        }
        return Self.device(device)
    }

    // MARK: - Tokens

    public func issueToken(deviceID: UInt64, expiresAt: Date?) async throws(StorageError) -> IssuedToken {
        let now = Date()
        return try await transaction { connection in
            var userID: Int64?
            for try await id in try await connection.query("SELECT user_id FROM devices WHERE id = \(deviceID.database)", logger: self.logger).decode(Int64.self) { userID = id }
            guard let userID else { throw StorageError.notFound("device \(deviceID)") }
            let token = try await Self.insertToken(connection, deviceID: deviceID, expiresAt: expiresAt, at: now, logger: self.logger)
            return IssuedToken(token: token, userID: userID.id, deviceID: deviceID, expiresAt: expiresAt)
        }
    }

    static func insertToken(_ connection: PostgresConnection, deviceID: UInt64, expiresAt: Date?, at now: Date, logger: Logger) async throws -> String {
        let token = DeviceToken.generate()
        try await connection.query("""
            INSERT INTO tokens (hash, device_id, created_at_ms, expires_at_ms)
            VALUES (\(ByteBuffer(bytes: DeviceToken.hash(token))), \(deviceID.database), \(now.milliseconds), \(expiresAt?.milliseconds))
            """, logger: logger)
        return token
    }

    public func authenticate(token: String, now: Date) async throws(StorageError) -> TokenIdentity? {
        guard token.utf8.count <= DeviceToken.maxLength else { return nil }
        let hash = ByteBuffer(bytes: DeviceToken.hash(token))
        guard let row = try await readAll("""
            SELECT d.user_id, t.device_id, t.expires_at_ms FROM tokens t JOIN devices d ON d.id = t.device_id
            WHERE t.hash = \(hash) AND t.revoked_at_ms IS NULL
            """, as: (Int64, Int64, Int64?).self).first else { return nil }
        if let expires = row.2, expires <= now.milliseconds { return nil }
        return TokenIdentity(userID: row.0.id, deviceID: row.1.id, expiresAt: row.2.map { Date(milliseconds: $0) })
    }

    public func revokeToken(_ token: String, now: Date) async throws(StorageError) -> Bool {
        let hash = ByteBuffer(bytes: DeviceToken.hash(token))
        return try await !writeAll("""
            UPDATE tokens SET revoked_at_ms = \(now.milliseconds) WHERE hash = \(hash) AND revoked_at_ms IS NULL RETURNING 1
            """, as: (Int32).self).isEmpty
    }

    public func tokensRevoked(since: Date) async throws(StorageError) -> [[UInt8]] {
        try await readAll("SELECT hash FROM tokens WHERE revoked_at_ms >= \(since.milliseconds)", as: (ByteBuffer).self)
            .map { Array($0.readableBytesView) }
    }

    public func revokeTokens(deviceID: UInt64, now: Date) async throws(StorageError) -> Int {
        try await writeAll("""
            WITH keys AS (UPDATE device_keys SET revoked_at_ms = \(now.milliseconds) WHERE device_id = \(deviceID.database) AND revoked_at_ms IS NULL)
            UPDATE tokens SET revoked_at_ms = \(now.milliseconds) WHERE device_id = \(deviceID.database) AND revoked_at_ms IS NULL RETURNING 1
            """, as: (Int32).self).count
    }

    // MARK: - Pre-shared keys

    public func issueDeviceKey(deviceID: UInt64) async throws(StorageError) -> DeviceKey {
        let device = try await device(id: deviceID)
        let key = DeviceKey.generate(userID: device.userID, deviceID: deviceID)
        _ = try await writeAll("""
            INSERT INTO device_keys (identity, device_id, key, created_at_ms)
            VALUES (\(key.identity), \(deviceID.database), \(ByteBuffer(bytes: key.key)), \(Date().milliseconds)) RETURNING 1
            """, as: Int32.self)
        return key
    }

    public func deviceKey(identity: String) async throws(StorageError) -> DeviceKey? {
        guard identity.utf8.count <= DeviceKey.maxIdentityLength else { return nil }
        guard let row = try await readAll("""
            SELECT d.user_id, k.device_id, k.key FROM device_keys k JOIN devices d ON d.id = k.device_id
            WHERE k.identity = \(identity) AND k.revoked_at_ms IS NULL
            """, as: (Int64, Int64, ByteBuffer).self).first else { return nil }
        return DeviceKey(identity: identity, key: Array(buffer: row.2), userID: row.0.id, deviceID: row.1.id)
    }

    // MARK: - Chats

    public func createChat(name: String, memberIDs: [UInt64]) async throws(StorageError) -> Chat {
        let name = try StorageRules.validName(name, of: "chat")
        let now = Date()
        return try await transaction { connection in
            let chat = Chat(id: try await Self.insertChat(connection, name: name, at: now, logger: self.logger), name: name, createdAt: Date(milliseconds: now.milliseconds), lastSequence: 0)
            // A missing user throws, and the transaction takes the chat back with it.
            for userID in Set(memberIDs) { try await Self.insertMember(connection, chatID: chat.id, userID: userID, at: now, logger: self.logger) }
            return chat
        }
    }

    static func insertChat(_ connection: PostgresConnection, name: String, at now: Date, logger: Logger) async throws -> UInt64 {
        try await insert(connection, "INSERT INTO chats (name, created_at_ms) VALUES (\(name), \(now.milliseconds)) RETURNING id", taken: "chat \(name)", logger: logger)
    }

    public func chat(id: UInt64) async throws(StorageError) -> Chat {
        guard let chat = try await readAll("SELECT id, name, created_at_ms, last_sequence, title FROM chats WHERE id = \(id.database)", as: (Int64, String, Int64, Int64, String).self).first else {
            throw .notFound("chat \(id)")
        }
        return Self.chat(chat)
    }

    public func chat(named name: String) async throws(StorageError) -> Chat {
        guard let chat = try await readAll("SELECT id, name, created_at_ms, last_sequence, title FROM chats WHERE name = \(name)", as: (Int64, String, Int64, Int64, String).self).first else {
            throw .notFound("chat \(name)")
        }
        return Self.chat(chat)
    }

    public func addMember(chatID: UInt64, userID: UInt64) async throws(StorageError) {
        let now = Date()
        try await transaction { connection in
            guard try await Self.exists(connection, "SELECT 1 FROM chats WHERE id = \(chatID.database)", logger: self.logger) else {
                throw StorageError.notFound("chat \(chatID)")
            }
            try await Self.insertMember(connection, chatID: chatID, userID: userID, at: now, logger: self.logger)
        }
    }

    public func removeMember(chatID: UInt64, userID: UInt64) async throws(StorageError) -> Bool {
        try await transaction { connection in
            guard try await Self.exists(connection, "SELECT 1 FROM chats WHERE id = \(chatID.database)", logger: self.logger) else {
                throw StorageError.notFound("chat \(chatID)")
            }
            return try await Self.exists(connection, """
                DELETE FROM members WHERE chat_id = \(chatID.database) AND user_id = \(userID.database) RETURNING 1
                """, logger: self.logger)
        }
    }

    public func chatPeers(ofUser userID: UInt64, limit: Int) async throws(StorageError) -> [UInt64] {
        try await readAll("""
            SELECT DISTINCT peer.user_id FROM members own JOIN members peer ON peer.chat_id = own.chat_id
            WHERE own.user_id = \(userID.database) AND peer.user_id <> own.user_id LIMIT \(max(0, limit))
            """, as: Int64.self).map(\.id)
    }

    // MARK: - Presence across nodes

    /// Records which users have a push session on `node`: those in `online` do (seen now), those
    /// in `offline` no longer do. With `exactly`, `online` is the node's whole set and every other
    /// row of the node goes (a node's start, and its periodic refresh); with `olderThan`, so do
    /// every node's rows not refreshed for that long (nodes that died).
    public func recordPresence(node: String, online: [UInt64], offline: [UInt64] = [], exactly: Bool = false, olderThan: Duration? = nil, now: Date = Date()) async throws(StorageError) {
        let expired = olderThan.map { now.milliseconds - Int64($0.components.seconds * 1000) }
        let ids = online.map(\.database)
        let gone = offline.map(\.database)
        try await transaction { connection in
            if let expired {
                try await connection.query("DELETE FROM online_users WHERE seen_at_ms < \(expired)", logger: self.logger)
            }
            if exactly {
                try await connection.query("DELETE FROM online_users WHERE node = \(node) AND NOT (user_id = ANY(\(ids)::BIGINT[]))", logger: self.logger)
            } else if !gone.isEmpty {
                try await connection.query("DELETE FROM online_users WHERE node = \(node) AND user_id = ANY(\(gone)::BIGINT[])", logger: self.logger)
            }
            if !ids.isEmpty {
                try await connection.query("""
                    INSERT INTO online_users (user_id, node, seen_at_ms) SELECT unnest(\(ids)::BIGINT[]), \(node), \(now.milliseconds)
                    ON CONFLICT (user_id, node) DO UPDATE SET seen_at_ms = excluded.seen_at_ms
                    """, logger: self.logger)
            }
        }
    }

    /// Of `users`, those with a push session on some node that refreshed its rows within
    /// `freshness`.
    public func onlineUsers(among users: [UInt64], freshness: Duration, now: Date = Date()) async throws(StorageError) -> Set<UInt64> {
        guard !users.isEmpty else { return [] }
        let since = now.milliseconds - Int64(freshness.components.seconds * 1000)
        return Set(try await readAll("""
            SELECT DISTINCT user_id FROM online_users WHERE user_id = ANY(\(users.map(\.database))::BIGINT[]) AND seen_at_ms >= \(since)
            """, as: Int64.self).map(\.id))
    }

    /// Adds a member to an existing chat; adding one twice changes nothing.
    /// Returns whether the user was not a member before.
    @discardableResult
    static func insertMember(_ connection: PostgresConnection, chatID: UInt64, userID: UInt64, at now: Date, logger: Logger) async throws -> Bool {
        guard try await exists(connection, "SELECT 1 FROM users WHERE id = \(userID.database)", logger: logger) else {
            throw StorageError.notFound("user \(userID)")
        }
        return try await exists(connection, """
            INSERT INTO members (chat_id, user_id, joined_at_ms) VALUES (\(chatID.database), \(userID.database), \(now.milliseconds))
            ON CONFLICT (chat_id, user_id) DO NOTHING RETURNING 1
            """, logger: logger)
    }

    /// Whether `query` returns a row.
    static func exists(_ connection: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> Bool {
        for try await _ in try await connection.query(query, logger: logger) { return true }
        return false
    }

    public func members(ofChat chatID: UInt64) async throws(StorageError) -> Set<UInt64> {
        Set(try await readAll("SELECT user_id FROM members WHERE chat_id = \(chatID.database)", as: (Int64).self).map(\.id))
    }

    public func memberUsers(ofChat chatID: UInt64, limit: Int) async throws(StorageError) -> [User] {
        try await readAll("""
            SELECT u.id, u.name, u.created_at_ms FROM users u JOIN members m ON m.user_id = u.id
            WHERE m.chat_id = \(chatID.database) ORDER BY u.id LIMIT \(max(0, limit))
            """, as: (Int64, String, Int64).self).map(Self.user)
    }

    public func chats(ofUser userID: UInt64) async throws(StorageError) -> [Chat] {
        try await readAll("""
            SELECT c.id, c.name, c.created_at_ms, c.last_sequence, c.title FROM chats c JOIN members m ON m.chat_id = c.id
            WHERE m.user_id = \(userID.database) ORDER BY c.id
            """, as: (Int64, String, Int64, Int64, String).self).map(Self.chat)
    }

    public func listChats() async throws(StorageError) -> [ChatSummary] {
        try await summaries(of: readAll("SELECT id, name, created_at_ms, last_sequence, title FROM chats ORDER BY id", as: (Int64, String, Int64, Int64, String).self).map(Self.chat), maxMemberNames: nil)
    }

    public func chatSummaries(ofUser userID: UInt64, afterChatID: UInt64, limit: Int, maxMemberNames: Int) async throws(StorageError) -> [ChatSummary] {
        try await summaries(of: readAll("""
            SELECT c.id, c.name, c.created_at_ms, c.last_sequence, c.title FROM chats c JOIN members m ON m.chat_id = c.id
            WHERE m.user_id = \(userID.database) AND c.id > \(afterChatID.database) ORDER BY c.id LIMIT \(max(0, limit))
            """, as: (Int64, String, Int64, Int64, String).self).map(Self.chat), maxMemberNames: maxMemberNames)
    }

    public func chatSummary(id: UInt64, maxMemberNames: Int) async throws(StorageError) -> ChatSummary {
        try await summaries(of: [chat(id: id)], maxMemberNames: maxMemberNames)[0]
    }

    /// Each chat's member names in byte order (the first `maxMemberNames`, or all when nil) and
    /// count, in one query for all of them.
    private func summaries(of chats: [Chat], maxMemberNames: Int?) async throws(StorageError) -> [ChatSummary] {
        guard !chats.isEmpty else { return [] }
        let limit = maxMemberNames.map { Int64(max(0, $0)) }
        let rows = try await readAll("""
            SELECT m.chat_id, u.name, COUNT(*) OVER (PARTITION BY m.chat_id),
                   ROW_NUMBER() OVER (PARTITION BY m.chat_id ORDER BY u.name COLLATE "C")
            FROM members m JOIN users u ON u.id = m.user_id WHERE m.chat_id = ANY(\(chats.map(\.id.database)))
            ORDER BY m.chat_id, u.name COLLATE "C"
            """, as: (Int64, String, Int64, Int64).self)
        var names: [UInt64: [String]] = [:]
        var counts: [UInt64: Int] = [:]
        for (chatID, name, count, rank) in rows {
            counts[chatID.id] = Int(count)
            if limit.map({ rank <= $0 }) ?? true { names[chatID.id, default: []].append(name) }
        }
        return chats.map { ChatSummary(chat: $0, memberNames: names[$0.id] ?? [], memberCount: counts[$0.id] ?? 0) }
    }

    // MARK: - Delivery

    public func deliveryCursor(deviceID: UInt64, chatID: UInt64) async throws(StorageError) -> UInt64 {
        try await readOne("SELECT sequence FROM delivery_cursors WHERE device_id = \(deviceID.database) AND chat_id = \(chatID.database)", as: Int64.self)?.id ?? 0
    }

    public func deliveryCursors(deviceID: UInt64) async throws(StorageError) -> [UInt64: UInt64] {
        var cursors: [UInt64: UInt64] = [:]
        for (chatID, sequence) in try await readAll("SELECT chat_id, sequence FROM delivery_cursors WHERE device_id = \(deviceID.database)", as: (Int64, Int64).self) {
            cursors[chatID.id] = sequence.id
        }
        return cursors
    }

    public func memberDeviceCursors(chatID: UInt64, now: Date) async throws(StorageError) -> [MemberDeviceCursor] {
        try await readAll("""
            SELECT d.user_id, d.id, COALESCE(c.sequence, 0)
            FROM members m
            JOIN devices d ON d.user_id = m.user_id
            LEFT JOIN delivery_cursors c ON c.device_id = d.id AND c.chat_id = m.chat_id
            WHERE m.chat_id = \(chatID.database) AND EXISTS (
                SELECT 1 FROM tokens t WHERE t.device_id = d.id AND t.revoked_at_ms IS NULL
                AND (t.expires_at_ms IS NULL OR t.expires_at_ms > \(now.milliseconds)))
            """, as: (Int64, Int64, Int64).self).map { MemberDeviceCursor(userID: $0.0.id, deviceID: $0.1.id, sequence: $0.2.id) }
    }

    public func advanceDeliveryCursors(_ cursors: [DeliveryCursor]) async throws(StorageError) {
        guard !cursors.isEmpty else { return }
        // One statement for the whole batch; sorted so that two nodes writing overlapping
        // batches lock the rows in the same order (no deadlock). Never backwards: a slower
        // write of an older cursor cannot undo a newer one.
        var newest: [DeliveryCursor: UInt64] = [:]
        for cursor in cursors {
            let key = DeliveryCursor(deviceID: cursor.deviceID, chatID: cursor.chatID, sequence: 0)
            newest[key] = max(newest[key] ?? 0, cursor.sequence)
        }
        let sorted = newest.sorted { ($0.key.deviceID, $0.key.chatID) < ($1.key.deviceID, $1.key.chatID) }
        let devices = sorted.map(\.key.deviceID.database), chats = sorted.map(\.key.chatID.database), sequences = sorted.map(\.value.database)
        _ = try await writeAll("""
            INSERT INTO delivery_cursors (device_id, chat_id, sequence)
            SELECT * FROM unnest(\(devices)::BIGINT[], \(chats)::BIGINT[], \(sequences)::BIGINT[])
            ON CONFLICT (device_id, chat_id) DO UPDATE SET sequence = excluded.sequence WHERE excluded.sequence > delivery_cursors.sequence
            RETURNING 1
            """, as: (Int32).self)
    }

    public func statistics() async throws(StorageError) -> StorageStatistics {
        let now = Date().milliseconds
        guard let row = try await readAll("""
            SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM devices), (SELECT COUNT(*) FROM chats),
                   (SELECT COUNT(*) FROM messages),
                   (SELECT COUNT(*) FROM tokens WHERE revoked_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > \(now))),
                   (SELECT name FROM courier_migrations ORDER BY version DESC LIMIT 1)
            """, as: (Int64, Int64, Int64, Int64, Int64, String?).self).first else {
            throw .unavailable("PostgreSQL returned no statistics")
        }
        return StorageStatistics(users: Int(row.0), devices: Int(row.1), chats: Int(row.2), messages: Int(row.3), activeTokens: Int(row.4), schemaVersion: row.5 ?? "none")
    }

    // MARK: - Rows

    static func user(_ row: (Int64, String, Int64)) -> User {
        User(id: row.0.id, name: row.1, createdAt: Date(milliseconds: row.2))
    }

    static func device(_ row: (Int64, Int64, String, Int64)) -> Device {
        Device(id: row.0.id, userID: row.1.id, name: row.2, createdAt: Date(milliseconds: row.3))
    }

    static func chat(_ row: (Int64, String, Int64, Int64, String)) -> Chat {
        Chat(id: row.0.id, name: row.1, createdAt: Date(milliseconds: row.2), lastSequence: row.3.id, title: row.4)
    }
}

/// Invites: one-time sign-in codes.
extension PostgresStorage {
    public func createInvite(userName: String, expiresAt: Date) async throws(StorageError) -> IssuedInvite {
        let name = try StorageRules.validName(userName, of: "user")
        let now = Date()
        // An invite's code is a token like a device's: 128 random bits, stored as its hash.
        let code = DeviceToken.generate()
        _ = try await writeAll("""
            INSERT INTO invites (hash, user_name, created_at_ms, expires_at_ms)
            VALUES (\(ByteBuffer(bytes: DeviceToken.hash(code))), \(name), \(now.milliseconds), \(expiresAt.milliseconds)) RETURNING 1
            """, as: Int32.self)
        return IssuedInvite(code: code, userName: name, expiresAt: expiresAt)
    }

    public func redeemInvite(code: String, deviceName: String, now: Date) async throws(StorageError) -> RedeemedInvite? {
        guard code.utf8.count <= DeviceToken.maxLength else { return nil }
        let deviceName = try StorageRules.validName(deviceName, of: "device")
        let hash = ByteBuffer(bytes: DeviceToken.hash(code))
        return try await transaction { connection in
            // Taken only while unused and unexpired: of two redeeming at once, one wins (the
            // other waits for the row, then finds it used).
            var userName: String?
            for try await name in try await connection.query("""
                UPDATE invites SET used_at_ms = \(now.milliseconds)
                WHERE hash = \(hash) AND used_at_ms IS NULL AND expires_at_ms > \(now.milliseconds) RETURNING user_name
                """, logger: self.logger).decode(String.self) { userName = name }
            guard let userName else { return nil }
            var user: User?
            for try await row in try await connection.query("SELECT id, name, created_at_ms FROM users WHERE name = \(userName)", logger: self.logger).decode((Int64, String, Int64).self) {
                user = Self.user(row)
            }
            if user == nil {
                user = User(id: try await Self.insertUser(connection, name: userName, at: now, logger: self.logger), name: userName, createdAt: Date(milliseconds: now.milliseconds))
            }
            let found = user!
            let deviceID = try await Self.insertDevice(connection, userID: found.id, name: deviceName, at: now, logger: self.logger)
            let token = try await Self.insertToken(connection, deviceID: deviceID, expiresAt: nil, at: now, logger: self.logger)
            return RedeemedInvite(
                user: found, device: Device(id: deviceID, userID: found.id, name: deviceName, createdAt: Date(milliseconds: now.milliseconds)),
                token: IssuedToken(token: token, userID: found.id, deviceID: deviceID, expiresAt: nil)
            )
        }
    }
}
