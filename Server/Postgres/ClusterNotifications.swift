import CourierCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// News between the nodes of a cluster, through PostgreSQL's LISTEN/NOTIFY: a commit added
/// messages to a chat (with the chat's members and the messages' push frames, so that the others
/// push them without a read), a device's acknowledgement moved its cursor (for the delivery
/// receipts of senders connected elsewhere), and "device D's push session is now on node N"
/// (sent by `PostgresStorage.claimSession`). A node tells the others after the commit, outside
/// the message transaction (a NOTIFY in it would take PostgreSQL's global notify lock at every
/// commit).
///
/// A notification can be lost (the sender dies between its commit and its NOTIFY, the listening
/// connection drops): nothing depends on it alone. After a reconnect, and every few seconds,
/// the node compares what its live devices know with the chats' last sequences (`repair`).
public final class ClusterNotifications: Sendable {
    static let channel = "courier_chats"
    /// PostgreSQL's payload limit is 8,000 bytes; a notification carries at most this much.
    static let maxPayloadBytes = 7_900
    /// Push frames waiting for the next NOTIFY, in bytes; past it a chat's news goes without
    /// its frames (the receivers read those messages from the database).
    static let maxPendingFrameBytes = 1 << 20

    private struct AcknowledgementKey: Hashable {
        var chatID: UInt64
        var deviceID: UInt64
    }

    /// Bounded by the chats and (device, chat) pairs with news, and by `maxPendingFrameBytes`.
    private struct Pending {
        var chats: [UInt64: ClusterNews.Chat] = [:]
        var frameBytes = 0
        var acknowledgements: [AcknowledgementKey: ClusterNews.Acknowledgement] = [:]
        /// Bounded by the users with sessions on this node.
        var presenceChanged: Set<UInt64> = []
        var sending = false

        var isEmpty: Bool { chats.isEmpty && acknowledgements.isEmpty && presenceChanged.isEmpty }

        mutating func add(_ chat: ClusterNews.Chat) {
            var chat = chat
            let bytes = chat.messages.reduce(0) { $0 + $1.frame.count }
            if frameBytes + bytes > ClusterNotifications.maxPendingFrameBytes { chat.messages = [] } else { frameBytes += bytes }
            guard var merged = chats[chat.chatID] else {
                chats[chat.chatID] = chat
                return
            }
            if chat.sequence >= merged.sequence { merged.members = chat.members }
            merged.sequence = max(merged.sequence, chat.sequence)
            // Two commits' frames, in sequence order (they may arrive out of order).
            merged.messages = (merged.messages + chat.messages).sorted { $0.sequence < $1.sequence }
            chats[chat.chatID] = merged
        }

        mutating func add(_ acknowledgement: ClusterNews.Acknowledgement) {
            let key = AcknowledgementKey(chatID: acknowledgement.chatID, deviceID: acknowledgement.deviceID)
            guard var merged = acknowledgements[key] else {
                acknowledgements[key] = acknowledgement
                return
            }
            merged.from = min(merged.from, acknowledgement.from)
            merged.to = max(merged.to, acknowledgement.to)
            acknowledgements[key] = merged
        }

        mutating func take() -> ClusterNews {
            defer { self = Pending(sending: true) }
            return ClusterNews(
                chats: chats.values.sorted { $0.chatID < $1.chatID },
                acknowledgements: acknowledgements.values.sorted { ($0.chatID, $0.deviceID) < ($1.chatID, $1.deviceID) },
                presenceChanged: presenceChanged.sorted()
            )
        }
    }

    /// This node's name in payloads: its own notifications come back to it, and are skipped.
    public let node: String
    private let storage: PostgresStorage
    private let logger: Logger
    private let pending = Mutex(Pending())
    private let totals = Mutex(ClusterNewsStatistics())

    /// What this node told the others, and heard from them, since it started.
    package var statistics: ClusterNewsStatistics { totals.withLock { $0 } }

    public init(storage: PostgresStorage, node: String, logger: Logger) {
        self.storage = storage
        self.node = node
        self.logger = logger
    }

    /// Tells the other nodes what a commit added to chats. Returns at once: news is gathered
    /// while a NOTIFY is on its way.
    public func publish(_ chats: [ClusterNews.Chat]) {
        publish { pending in for chat in chats { pending.add(chat) } }
    }

    /// Tells the other nodes whose presence changed here. Returns at once.
    public func publish(presenceChanged users: [UInt64]) {
        publish { pending in pending.presenceChanged.formUnion(users) }
    }

    /// Tells the other nodes that devices' stored cursors moved. Returns at once.
    public func publish(_ acknowledgements: [ClusterNews.Acknowledgement]) {
        publish { pending in for acknowledgement in acknowledgements { pending.add(acknowledgement) } }
    }

    private func publish(_ adding: (inout Pending) -> Void) {
        let start = pending.withLock { pending -> Bool in
            adding(&pending)
            guard !pending.sending, !pending.isEmpty else { return false }
            pending.sending = true
            return true
        }
        if start { Task { await self.sendPending() } }
    }

    private func sendPending() async {
        while true {
            let news = pending.withLock { pending -> ClusterNews in
                if pending.isEmpty {
                    pending.sending = false
                    return ClusterNews()
                }
                return pending.take()
            }
            guard !news.isEmpty else { return }
            // One round trip for all of it: PostgreSQL delivers a transaction's notifications in order.
            let payloads = Self.payloads(node: node, news)
            let started = ContinuousClock.now
            do {
                try await storage.bounded("a NOTIFY") { [storage, logger] () async throws(StorageError) in
                    do {
                        try await storage.client.query("SELECT pg_notify(\(Self.channel), payload) FROM unnest(\(payloads)::text[]) AS payload", logger: logger)
                    } catch {
                        throw PostgresStorage.storageError(error)
                    }
                }
                let waited = ContinuousClock.now - started
                totals.withLock { totals in
                    totals.statements += 1
                    totals.payloads += payloads.count
                    totals.payloadBytes += payloads.reduce(0) { $0 + $1.utf8.count }
                    totals.notifySeconds += waited / .seconds(1)
                }
            } catch {
                // The other nodes' repair sweep finds these messages a few seconds later.
                logger.warning("cluster notification lost", metadata: ["error": "\(error)"])
            }
        }
    }

    /// "NODE;n;BASE64" payloads of `news`, each within the payload limit. A chat's news too large
    /// for one payload goes without its frames, then without its members (the receivers read them).
    static func payloads(node: String, _ news: ClusterNews) -> [String] {
        let prefix = node + ";n;"
        let rawLimit = (maxPayloadBytes - prefix.utf8.count) / 4 * 3
        // Protobuf concatenates repeated fields: the encodings of one-item news, joined, are the
        // encoding of them all, so each item is encoded once and payloads are filled by size.
        var items: [[UInt8]] = []
        for var chat in news.chats {
            var bytes = ClusterNews(chats: [chat]).serializedBytes()
            if bytes.count > rawLimit {
                chat.messages = []
                bytes = ClusterNews(chats: [chat]).serializedBytes()
            }
            if bytes.count > rawLimit {
                chat.members = nil
                bytes = ClusterNews(chats: [chat]).serializedBytes()
            }
            items.append(bytes)
        }
        for acknowledgement in news.acknowledgements { items.append(ClusterNews(acknowledgements: [acknowledgement]).serializedBytes()) }
        // Users in runs of 500 (at most 5,000 bytes each): an item never outgrows a payload.
        for start in stride(from: 0, to: news.presenceChanged.count, by: 500) {
            items.append(ClusterNews(presenceChanged: Array(news.presenceChanged[start..<min(start + 500, news.presenceChanged.count)])).serializedBytes())
        }
        var payloads: [String] = []
        var current: [UInt8] = []
        for item in items {
            if current.count + item.count > rawLimit, !current.isEmpty {
                payloads.append(prefix + Data(current).base64EncodedString())
                current = []
            }
            current += item
        }
        if !current.isEmpty { payloads.append(prefix + Data(current).base64EncodedString()) }
        return payloads
    }

    /// What another node said.
    enum Received: Equatable {
        case news(ClusterNews)
        /// The device's push session is now on that node, its `epoch`th.
        case sessionMoved(deviceID: UInt64, epoch: UInt64)
    }

    /// What a payload from another node says; nil for this node's own or a malformed one.
    static func parse(_ payload: String, ownNode: String) -> Received? {
        let fields = payload.split(separator: ";", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, fields[0] != ownNode else { return nil }
        switch fields[1] {
        case "n":
            guard let bytes = Data(base64Encoded: String(fields[2])), let news = try? ClusterNews(serializedBytes: bytes) else { return nil }
            return .news(news)
        case "s":
            let parts = fields[2].split(separator: ":")
            guard parts.count == 2, let deviceID = UInt64(parts[0]), let epoch = UInt64(parts[1]) else { return nil }
            return .sessionMoved(deviceID: deviceID, epoch: epoch)
        default:
            return nil
        }
    }

    /// Listens until cancelled, handing other nodes' news to `heard` and `sessionMoved`. A lost
    /// connection is opened again (with backoff); `reconnected` runs after each new connection,
    /// for the caller to repair what was missed meanwhile.
    public func listen(
        heard: @escaping @Sendable (ClusterNews) async -> Void, sessionMoved: @escaping @Sendable (_ deviceID: UInt64, _ epoch: UInt64) -> Void,
        reconnected: @escaping @Sendable () async -> Void
    ) async {
        var delay: Duration = .milliseconds(100)
        var first = true
        while !Task.isCancelled {
            do {
                let (endpoint, generation) = storage.primary
                let connection = try await PostgresConnection.connect(configuration: try storage.url.connectionConfiguration(endpoint), id: 1, logger: logger)
                if !first { await reconnected() }
                first = false
                delay = .milliseconds(100)
                // LISTEN follows the primary (a standby cannot listen): when the storage moves
                // to another member, this connection ends and the next one goes there.
                let storage = self.storage
                let follower = Task {
                    while !Task.isCancelled, storage.primary.generation == generation {
                        try? await Task.sleep(for: .milliseconds(200))
                    }
                    if !Task.isCancelled { try? await connection.close() }
                }
                defer { follower.cancel() }
                try await withTaskCancellationHandler {
                    try await connection.listen(on: Self.channel) { notifications in
                        for try await notification in notifications {
                            totals.withLock { $0.received += 1 }
                            switch Self.parse(notification.payload, ownNode: node) {
                            case .news(let news)?: await heard(news)
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
        guard let epoch = try await writeAll("""
            WITH claimed AS (
                INSERT INTO device_sessions (device_id, node, epoch, attached_at_ms) VALUES (\(deviceID.database), \(node), 1, \(now))
                ON CONFLICT (device_id) DO UPDATE SET node = excluded.node, epoch = device_sessions.epoch + 1, attached_at_ms = excluded.attached_at_ms
                RETURNING epoch)
            SELECT claimed.epoch FROM claimed
            CROSS JOIN LATERAL pg_notify(\(ClusterNotifications.channel), \(node) || ';s;' || \(String(deviceID)) || ':' || claimed.epoch) AS told
            """, as: Int64.self).first else {
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
