import CourierCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// News between the nodes of a cluster, through PostgreSQL's LISTEN/NOTIFY: "chat C now holds
/// messages through sequence S". A node that commits messages tells the others after the
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

    /// "NODE;CHAT:SEQUENCE,CHAT:SEQUENCE,..." split to fit the payload limit.
    static func payloads(node: String, _ news: [UInt64: UInt64]) -> [String] {
        var payloads: [String] = []
        var current = node + ";"
        for (chatID, sequence) in news.sorted(by: { $0.key < $1.key }) {
            let item = "\(chatID):\(sequence)"
            if current.utf8.count + item.utf8.count + 1 > maxPayloadBytes, !current.hasSuffix(";") {
                payloads.append(current)
                current = node + ";"
            }
            current += current.hasSuffix(";") ? item : "," + item
        }
        if !current.hasSuffix(";") { payloads.append(current) }
        return payloads
    }

    /// The news in a payload from another node; nil for this node's own or a malformed one.
    func parse(_ payload: String) -> [ChatNews]? {
        guard let separator = payload.firstIndex(of: ";"), payload[..<separator] != node else { return nil }
        var news: [ChatNews] = []
        for item in payload[payload.index(after: separator)...].split(separator: ",") {
            let parts = item.split(separator: ":")
            guard parts.count == 2, let chatID = UInt64(parts[0]), let sequence = UInt64(parts[1]) else { return nil }
            news.append(ChatNews(chatID: chatID, sequence: sequence))
        }
        return news
    }

    /// Listens until cancelled, handing other nodes' news to `heard`. A lost connection is
    /// opened again (with backoff); `reconnected` runs after each new connection, for the
    /// caller to repair what was missed meanwhile.
    public func listen(heard: @escaping @Sendable ([ChatNews]) async -> Void, reconnected: @escaping @Sendable () async -> Void) async {
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
                            if let news = parse(notification.payload) { await heard(news) }
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
