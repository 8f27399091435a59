import CourierActors
import CourierPostgres
import Logging

/// Presence across a cluster's nodes: each node keeps the rows of its users with a session in
/// PostgreSQL's `online_users`, tells the others through NOTIFY which users changed, and reads
/// who is online anywhere. A node refreshes its rows every `refreshInterval`; rows older than
/// `freshness` (a node that died) no longer count, and are deleted after `retention`.
final class ClusterPresence: PresenceDirectory {
    static let refreshInterval: Duration = .seconds(30)
    static let freshness: Duration = .seconds(90)
    static let retention: Duration = .seconds(600)

    let storage: PostgresStorage
    let notifications: ClusterNotifications
    let live: LiveDevices
    let logger: Logger

    init(storage: PostgresStorage, notifications: ClusterNotifications, live: LiveDevices, logger: Logger) {
        self.storage = storage
        self.notifications = notifications
        self.live = live
        self.logger = logger
    }

    func record(_ changes: [UInt64: Bool]) async {
        do {
            try await storage.recordPresence(node: notifications.node, online: changes.filter(\.value).map(\.key), offline: changes.filter { !$0.value }.map(\.key))
        } catch {
            // The next refresh writes the node's whole set again.
            logger.debug("presence not recorded", metadata: ["error": "\(error)"])
        }
        // After the write: the other nodes read the new state when they hear of it.
        notifications.publish(presenceChanged: Array(changes.keys))
    }

    func online(among users: [UInt64]) async -> Set<UInt64>? {
        try? await storage.onlineUsers(among: users, freshness: Self.freshness)
    }

    /// Writes the node's whole set now and every `refreshInterval`, until cancelled.
    func run() async {
        while !Task.isCancelled {
            do {
                try await storage.recordPresence(node: notifications.node, online: live.users, exactly: true, olderThan: Self.retention)
            } catch {
                logger.debug("presence not refreshed", metadata: ["error": "\(error)"])
            }
            do { try await Task.sleep(for: Self.refreshInterval) } catch { return }
        }
    }
}
