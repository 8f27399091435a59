import CourierCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// News between the nodes of a cluster, through PostgreSQL's LISTEN/NOTIFY: "chat C now holds
/// messages through sequence S", and "device D's push session is now on node N" (sent by
/// `PostgresStorage.claimSession`). A node that commits messages tells the others after the
/// commit, outside the message transaction (a NOTIFY in it would take PostgreSQL's global
/// notify lock at every commit); the others wake the pumps of the chat's members' devices that
/// have a session with them, which read the messages from the database.
///
/// A notification can be lost (the sender dies between its commit and its NOTIFY, the listening
/// connection drops): nothing depends on it alone. After a reconnect, and every few seconds,
/// the node compares what its live devices know with the chats' last sequences (`repair`).
public final class ClusterNotifications: Sendable {
    /// What a notification names: a chat and how far it goes now.
    public struct ChatNews: Sendable, Equatable {
        public var chatID: UInt64
        public var sequence: UInt64

        public init(chatID: UInt64, sequence: UInt64) {
            self.chatID = chatID
            self.sequence = sequence
        }
    }

    static let channel = "courier_chats"
    /// PostgreSQL's payload limit is 8,000 bytes; a notification carries at most this much.
    static let maxPayloadBytes = 7_000

    private struct Pending {
        var news: [UInt64: UInt64] = [:]
        var sending = false
    }

    /// This node's name in payloads: its own notifications come back to it, and are skipped.
    public let node: String
    private let storage: PostgresStorage
    private let logger: Logger
    private let pending = Mutex(Pending())

    public init(storage: PostgresStorage, node: String, logger: Logger) {
        self.storage = storage
        self.node = node
        self.logger = logger
    }

    /// Tells the other nodes about newly committed messages. Returns at once: news is gathered
    /// while a NOTIFY is on its way (bounded by the number of chats: one entry per chat).
    public func publish(_ news: [ChatNews]) {
        let start = pending.withLock { pending -> Bool in
            for item in news { pending.news[item.chatID] = max(pending.news[item.chatID] ?? 0, item.sequence) }
            guard !pending.sending, !pending.news.isEmpty else { return false }
            pending.sending = true
            return true
        }
        if start { Task { await self.sendPending() } }
    }

    private func sendPending() async {
        while true {
            let news = pending.withLock { pending -> [UInt64: UInt64] in
                defer { pending.news = [:] }
                if pending.news.isEmpty { pending.sending = false }
                return pending.news
            }
            guard !news.isEmpty else { return }
            for payload in Self.payloads(node: node, news) {
                do {
                    try await storage.client.query("SELECT pg_notify(\(Self.channel), \(payload))", logger: logger)
                } catch {
                    // The other nodes' repair sweep finds these messages a few seconds later.
                    logger.warning("cluster notification lost", metadata: ["error": "\(PostgresStorage.storageError(error))"])
                }
            }
        }
    }

    /// "NODE;c;CHAT:SEQUENCE,CHAT:SEQUENCE,..." split to fit the payload limit.
    static func payloads(node: String, _ news: [UInt64: UInt64]) -> [String] {
        let start = node + ";c;"
        var payloads: [String] = []
        var current = start
        for (chatID, sequence) in news.sorted(by: { $0.key < $1.key }) {
            let item = "\(chatID):\(sequence)"
            if current.utf8.count + item.utf8.count + 1 > maxPayloadBytes, current != start {
                payloads.append(current)
                current = start
            }
            current += current == start ? item : "," + item
        }
        if current != start { payloads.append(current) }
        return payloads
    }

    /// What another node said.
    enum News: Equatable {
        case chats([ChatNews])
        /// The device's push session is now on that node, its `epoch`th.
        case sessionMoved(deviceID: UInt64, epoch: UInt64)
    }

    /// The news in a payload from another node; nil for this node's own or a malformed one.
    func parse(_ payload: String) -> News? {
        let fields = payload.split(separator: ";", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, fields[0] != node else { return nil }
        var pairs: [(UInt64, UInt64)] = []
        for item in fields[2].split(separator: ",") {
            let parts = item.split(separator: ":")
            guard parts.count == 2, let first = UInt64(parts[0]), let second = UInt64(parts[1]) else { return nil }
            pairs.append((first, second))
        }
        switch fields[1] {
        case "c": return .chats(pairs.map { ChatNews(chatID: $0.0, sequence: $0.1) })
        case "s": return pairs.count == 1 ? .sessionMoved(deviceID: pairs[0].0, epoch: pairs[0].1) : nil
        default: return nil
        }
    }

    /// Listens until cancelled, handing other nodes' news to `heard` and `sessionMoved`. A lost
    /// connection is opened again (with backoff); `reconnected` runs after each new connection,
    /// for the caller to repair what was missed meanwhile.
    public func listen(
        heard: @escaping @Sendable ([ChatNews]) async -> Void, sessionMoved: @escaping @Sendable (_ deviceID: UInt64, _ epoch: UInt64) -> Void,
        reconnected: @escaping @Sendable () async -> Void
    ) async {
        var delay: Duration = .milliseconds(100)
        var first = true
        while !Task.isCancelled {
            do {
                let connection = try await PostgresConnection.connect(configuration: try storage.url.connectionConfiguration(), id: 1, logger: logger)
                if !first { await reconnected() }
                first = false
                delay = .milliseconds(100)
                try await withTaskCancellationHandler {
                    try await connection.listen(on: Self.channel) { notifications in
                        for try await notification in notifications {
                            switch parse(notification.payload) {
                            case .chats(let news)?: await heard(news)
                            case .sessionMoved(let deviceID, let epoch)?: sessionMoved(deviceID, epoch)
                            case nil: break
                            }
                        }
                    }
                } onCancel: {
                    Task { try? await connection.close() }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("cluster notifications: listening connection lost; reconnecting", metadata: ["error": "\(PostgresStorage.storageError(error))", "delay": "\(delay)"])
            }
            do { try await Task.sleep(for: delay) } catch { return }
            delay = min(delay * 2, .seconds(5))
            first = false
        }
    }
}

extension PostgresStorage {
    /// Records that `node` holds the device's push session now, and tells the other nodes (which
    /// close an older session of it); returns the session's epoch (1, 2, ... per device).
    public func claimSession(deviceID: UInt64, node: String) async throws(StorageError) -> UInt64 {
        let now = Date().milliseconds
        guard let epoch = try await readOne("""
            WITH claimed AS (
                INSERT INTO device_sessions (device_id, node, epoch, attached_at_ms) VALUES (\(deviceID.database), \(node), 1, \(now))
                ON CONFLICT (device_id) DO UPDATE SET node = excluded.node, epoch = device_sessions.epoch + 1, attached_at_ms = excluded.attached_at_ms
                RETURNING epoch)
            SELECT claimed.epoch FROM claimed
            CROSS JOIN LATERAL pg_notify(\(ClusterNotifications.channel), \(node) || ';s;' || \(String(deviceID)) || ':' || claimed.epoch) AS told
            """, as: Int64.self) else {
            throw .unavailable("PostgreSQL returned no session epoch")
        }
        return epoch.id
    }

    /// The members of each of these chats, in one query (a notification names many chats).
    public func members(ofChats chats: [UInt64]) async throws(StorageError) -> [UInt64: [UInt64]] {
        guard !chats.isEmpty else { return [:] }
        var members: [UInt64: [UInt64]] = [:]
        for (chatID, userID) in try await readAll("SELECT chat_id, user_id FROM members WHERE chat_id = ANY(\(chats.map(\.database)))", as: (Int64, Int64).self) {
            members[chatID.id, default: []].append(userID.id)
        }
        return members
    }

    /// Every chat of these users with its last sequence: what the repair sweep compares with
    /// what the users' live devices know.
    public func chatHeads(ofUsers users: [UInt64]) async throws(StorageError) -> [(userID: UInt64, chatID: UInt64, lastSequence: UInt64)] {
        guard !users.isEmpty else { return [] }
        return try await readAll("""
            SELECT m.user_id, c.id, c.last_sequence FROM members m JOIN chats c ON c.id = m.chat_id
            WHERE m.user_id = ANY(\(users.map(\.database)))
            """, as: (Int64, Int64, Int64).self).map { ($0.0.id, $0.1.id, $0.2.id) }
    }
}
