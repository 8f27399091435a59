import CourierCore
import Foundation
import GRDB

/// The embedded storage: one SQLite database in WAL mode in the data directory, with FTS5 for
/// search. Safe to open from the admin commands while the server runs: SQLite locks across
/// processes, and WAL lets readers run beside the one writer.
public final class SQLiteStorage: ServerStorage {
    public let path: String
    let pool: DatabasePool
    /// The one thread that writes: every write transaction runs on it, synchronously. The
    /// log's consumers run their tasks here too (`executor`), so a store transaction costs them
    /// no hop to another thread and back.
    let writerThread = DedicatedThreadExecutor(name: "courier-sqlite")

    public var executor: (any TaskExecutor)? { writerThread }
    /// Where `makeDurable` blocks in its fdatasync, off the writer (which goes on storing) and
    /// off the event loops.
    let syncThread = DedicatedThreadExecutor(name: "courier-sqlsync")
    /// Chats' members and last sequences for the store transaction (`storeBatch`); a write
    /// that changes either forgets the chat in its own transaction.
    let chatStates = ChatStates()

    /// Opens (creating and migrating if needed) the database at `path`.
    public init(path: String) throws(StorageError) {
        self.path = path
        var configuration = Configuration()
        // Another process (an admin command, a second server) may hold the write lock briefly.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // NORMAL: a commit does not wait for fsync. The log is the source of truth, and the
            // consumers make their store transactions durable (`makeDurable`) before they
            // commit any offset, so nothing is lost.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
            // What a crash left queued for search is indexed now, not at the first store.
            try pool.write { try Self.indexQueuedForSearch($0) }
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

    /// Reads only revoked rows, through their index (v8).
    static let tokensRevokedSQL = "SELECT hash FROM tokens WHERE revoked_at_ms >= ?"

    public func tokensRevoked(since: Date) async throws(StorageError) -> [[UInt8]] {
        try readOneStatement { db in
            try Data.fetchAll(db.cachedStatement(sql: Self.tokensRevokedSQL), arguments: [since.milliseconds]).map { [UInt8]($0) }
        }
    }

    public func revokeTokens(deviceID: UInt64, now: Date) async throws(StorageError) -> Int {
        try await write { db in
            try db.execute(sql: "UPDATE tokens SET revoked_at_ms = ? WHERE device_id = ? AND revoked_at_ms IS NULL", arguments: [now.milliseconds, Int64(clamping: deviceID)])
            let tokens = db.changesCount
            try db.execute(sql: "UPDATE device_keys SET revoked_at_ms = ? WHERE device_id = ? AND revoked_at_ms IS NULL", arguments: [now.milliseconds, Int64(clamping: deviceID)])
            return tokens
        }
    }

    // MARK: - Pre-shared keys

    public func issueDeviceKey(deviceID: UInt64) async throws(StorageError) -> DeviceKey {
        let now = Date()
        return try await write { db in
            guard let userID = try Int64.fetchOne(db, sql: "SELECT user_id FROM devices WHERE id = ?", arguments: [Int64(clamping: deviceID)]) else {
                throw StorageError.notFound("device \(deviceID)")
            }
            return try Self.insertDeviceKey(db, userID: UInt64(userID), deviceID: deviceID, at: now)
        }
    }

    static func insertDeviceKey(_ db: Database, userID: UInt64, deviceID: UInt64, at now: Date) throws -> DeviceKey {
        let key = DeviceKey.generate(userID: userID, deviceID: deviceID)
        try db.cachedStatement(sql: "INSERT INTO device_keys (identity, device_id, key, created_at_ms) VALUES (?, ?, ?, ?)")
            .execute(arguments: [key.identity, Int64(deviceID), Data(key.key), now.milliseconds])
        return key
    }

    public func deviceKey(identity: String) async throws(StorageError) -> DeviceKey? {
        guard identity.utf8.count <= DeviceKey.maxIdentityLength else { return nil }
        return try readOneStatement { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: """
                SELECT d.user_id, k.device_id, k.key FROM device_keys k JOIN devices d ON d.id = k.device_id
                WHERE k.identity = ? AND k.revoked_at_ms IS NULL
                """), arguments: [identity]) else { return nil }
            return DeviceKey(identity: identity, key: [UInt8](row["key"] as Data), userID: UInt64(row["user_id"] as Int64), deviceID: UInt64(row["device_id"] as Int64))
        }
    }

    // MARK: - Invites

    public func createInvite(userName: String, expiresAt: Date) async throws(StorageError) -> IssuedInvite {
        let name = try Self.validName(userName, of: "user")
        let now = Date()
        // An invite's code is a token like a device's: 128 random bits, stored as its hash.
        let code = DeviceToken.generate()
        try await write { db in
            try db.cachedStatement(sql: "INSERT INTO invites (hash, user_name, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?)")
                .execute(arguments: [Data(DeviceToken.hash(code)), name, now.milliseconds, expiresAt.milliseconds])
        }
        return IssuedInvite(code: code, userName: name, expiresAt: expiresAt)
    }

    public func redeemInvite(code: String, deviceName: String, now: Date) async throws(StorageError) -> RedeemedInvite? {
        guard code.utf8.count <= DeviceToken.maxLength else { return nil }
        let deviceName = try Self.validName(deviceName, of: "device")
        let hash = Data(DeviceToken.hash(code))
        return try await write { db in
            // Taken only while unused and unexpired: of two redeeming at once, one wins.
            try db.execute(
                sql: "UPDATE invites SET used_at_ms = ? WHERE hash = ? AND used_at_ms IS NULL AND expires_at_ms > ?",
                arguments: [now.milliseconds, hash, now.milliseconds]
            )
            guard db.changesCount == 1, let userName = try String.fetchOne(db, sql: "SELECT user_name FROM invites WHERE hash = ?", arguments: [hash]) else { return nil }
            let user: User
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM users WHERE name = ?", arguments: [userName]) {
                user = Self.user(row)
            } else {
                user = User(id: try Self.insertUser(db, name: userName, at: now), name: userName, createdAt: Date(milliseconds: now.milliseconds))
            }
            let deviceID = try Self.insertDevice(db, userID: user.id, name: deviceName, at: now)
            let token = try Self.insertToken(db, deviceID: deviceID, expiresAt: nil, at: now)
            return RedeemedInvite(
                user: user, device: Device(id: deviceID, userID: user.id, name: deviceName, createdAt: Date(milliseconds: now.milliseconds)),
                token: IssuedToken(token: token, userID: user.id, deviceID: deviceID, expiresAt: nil)
            )
        }
    }

    // MARK: - Chats

    public func createChat(name: String, memberIDs: [UInt64]) async throws(StorageError) -> Chat {
        let name = try Self.validName(name, of: "chat")
        let now = Date()
        // No `chatStates.forget`: a new chat was never kept (a store keeps only chats it found,
        // and chats are never deleted, so no id comes back with a state).
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
            guard let row = try Row.fetchOne(db, sql: "SELECT \(Self.chatColumns) FROM chats c WHERE c.id = ?", arguments: [Int64(clamping: id)]) else {
                throw StorageError.notFound("chat \(id)")
            }
            return Self.chat(row)
        }
    }

    public func chat(named name: String) async throws(StorageError) -> Chat {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT \(Self.chatColumns) FROM chats c WHERE c.name = ?", arguments: [name]) else {
                throw StorageError.notFound("chat \(name)")
            }
            return Self.chat(row)
        }
    }

    public func addMember(chatID: UInt64, userID: UInt64) async throws(StorageError) {
        let now = Date()
        try await write { [chatStates] db in
            chatStates.forget(chatID)
            guard try Int64.fetchOne(db, sql: "SELECT id FROM chats WHERE id = ?", arguments: [Int64(clamping: chatID)]) != nil else {
                throw StorageError.notFound("chat \(chatID)")
            }
            try Self.insertMember(db, chatID: chatID, userID: userID, at: now)
        }
    }

    public func removeMember(chatID: UInt64, userID: UInt64) async throws(StorageError) -> Bool {
        try await write { [chatStates] db in
            chatStates.forget(chatID)
            guard try Int64.fetchOne(db, sql: "SELECT id FROM chats WHERE id = ?", arguments: [Int64(clamping: chatID)]) != nil else {
                throw StorageError.notFound("chat \(chatID)")
            }
            try db.execute(sql: "DELETE FROM members WHERE chat_id = ? AND user_id = ?", arguments: [Int64(clamping: chatID), Int64(clamping: userID)])
            return db.changesCount > 0
        }
    }

    public func chatPeers(ofUser userID: UInt64, limit: Int) async throws(StorageError) -> [UInt64] {
        try read { db in
            try Int64.fetchAll(db.cachedStatement(sql: """
                SELECT DISTINCT peer.user_id FROM members own JOIN members peer ON peer.chat_id = own.chat_id
                WHERE own.user_id = ? AND peer.user_id != own.user_id LIMIT ?
                """), arguments: [Int64(clamping: userID), max(0, limit)]).map { UInt64($0) }
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

    public func memberUsers(ofChat chatID: UInt64, limit: Int) async throws(StorageError) -> [User] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT u.* FROM users u JOIN members m ON m.user_id = u.id WHERE m.chat_id = ? ORDER BY u.id LIMIT ?
                """, arguments: [Int64(clamping: chatID), max(0, limit)]).map(Self.user)
        }
    }

    public func chats(ofUser userID: UInt64) async throws(StorageError) -> [Chat] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(Self.chatColumns) FROM chats c JOIN members m ON m.chat_id = c.id WHERE m.user_id = ? ORDER BY c.id
                """, arguments: [Int64(clamping: userID)]).map(Self.chat)
        }
    }

    public func listChats() async throws(StorageError) -> [ChatSummary] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT \(Self.chatColumns) FROM chats c ORDER BY c.id").map { try Self.summary(db, Self.chat($0), maxMemberNames: nil) }
        }
    }

    public func chatSummaries(ofUser userID: UInt64, afterChatID: UInt64, limit: Int, maxMemberNames: Int) async throws(StorageError) -> [ChatSummary] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(Self.chatColumns) FROM chats c JOIN members m ON m.chat_id = c.id WHERE m.user_id = ? AND c.id > ? ORDER BY c.id LIMIT ?
                """, arguments: [Int64(clamping: userID), Int64(clamping: afterChatID), max(0, limit)]).map {
                try Self.summary(db, Self.chat($0), maxMemberNames: maxMemberNames)
            }
        }
    }

    public func chatSummary(id: UInt64, maxMemberNames: Int) async throws(StorageError) -> ChatSummary {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT \(Self.chatColumns) FROM chats c WHERE c.id = ?", arguments: [Int64(clamping: id)]) else {
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

    /// Runs a write transaction on the writer thread, synchronously there.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(StorageError) -> T {
        try await onWriterThread { try pool.writeWithoutTransaction { db in try db.inPreparedTransaction { try body(db) } } }
    }

    /// Runs `body` on the writer thread (`writerThread`): no hop for a caller already there,
    /// else one there and one back, as GRDB's own asynchronous write would take. GRDB's
    /// synchronous writes enter its writer queue with `dispatch_sync`, which runs the block on
    /// the calling thread when the queue is free, so the transaction runs here.
    func onWriterThread<T: Sendable>(_ body: () throws -> T) async throws(StorageError) -> T {
        do {
            return try await withTaskExecutorPreference(writerThread) { try body() }
        } catch {
            throw Self.storageError(error)
        }
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
        try StorageRules.validName(name, of: kind)
    }

    private static func user(_ row: Row) -> User {
        User(id: UInt64(row["id"] as Int64), name: row["name"], createdAt: Date(milliseconds: row["created_at_ms"]))
    }

    private static func device(_ row: Row) -> Device {
        Device(id: UInt64(row["id"] as Int64), userID: UInt64(row["user_id"] as Int64), name: row["name"], createdAt: Date(milliseconds: row["created_at_ms"]))
    }

    /// A chat's columns, `c` being the chats table, with its last sequence: the highest one
    /// stored (`lastSequence`).
    static let chatColumns = "c.*, (\(lastSequenceSQL)) AS last_sequence"

    private static func chat(_ row: Row) -> Chat {
        Chat(id: UInt64(row["id"] as Int64), name: row["name"], createdAt: Date(milliseconds: row["created_at_ms"]), lastSequence: UInt64(row["last_sequence"] as Int64), title: row["title"])
    }

    static func storedMessage(_ row: Row) -> StoredMessage {
        StoredMessage(
            serverMessageID: UInt64(row["server_message_id"] as Int64),
            chatID: UInt64(row["chat_id"] as Int64),
            sequence: UInt64(row["sequence"] as Int64),
            senderUserID: UInt64(row["sender_user_id"] as Int64),
            senderDeviceID: UInt64(row["sender_device_id"] as Int64),
            clientMessageID: row["client_message_id"],
            text: row["text"],
            clientSentAtMilliseconds: row["client_sent_at_ms"],
            acceptedAtMilliseconds: row["accepted_at_ms"],
            change: StoredMessage.change(kind: row["kind"] as Int64, sequence: row["refers_to"] as Int64),
            sentText: row["sent_text"],
            editedAtMilliseconds: row["edited_at_ms"],
            deleted: row["deleted"]
        )
    }
}

extension Database {
    /// A transaction like GRDB's `inTransaction(.immediate)`, with BEGIN and COMMIT prepared
    /// once per connection: GRDB prepares both anew for every transaction, and SQLite's parser
    /// was about a tenth of the writer's time at 500 messages a second (`scripts/bench-cost`,
    /// `PERF=1`). A body or a COMMIT that throws rolls the transaction back (unless SQLite
    /// already did), and the error goes on. Unlike GRDB's, it does not make the body's later
    /// statements fail once SQLite has rolled the transaction back by itself (a full disk):
    /// a body that catches an error and goes on writing belongs in `inTransaction`. Such a
    /// transaction is still not committed as if whole: the COMMIT finds none and throws.
    func inPreparedTransaction<T>(_ body: () throws -> T) throws -> T {
        try cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            let result = try body()
            guard isInsideTransaction else { throw DatabaseError(resultCode: .SQLITE_ABORT, message: "the transaction was rolled back by SQLite") }
            try cachedStatement(sql: "COMMIT TRANSACTION").execute()
            return result
        } catch {
            try? rollback()
            throw error
        }
    }
}
