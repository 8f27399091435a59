import CoAP
import CourierActors
import CourierCore
import CourierGateway
import CourierIngest
import CourierOps
import CourierPostgres
import CourierPush
import Foundation
import Logging
import ServiceLifecycle

/// One `courier-server` node of a cluster: the same CoAP gateway, push sessions, actors and
/// operations listener as the embedded node, on the cluster's PostgreSQL instead of a log and
/// SQLite. Any node takes any device; a message is acknowledged once committed to PostgreSQL
/// (`ClusterIntake`), pushed at once to the members' devices with a session on this node, and
/// announced to the other nodes (`ClusterNotifications`), whose devices read it from the database.
public final class ClusterNode: Sendable {
    public let configuration: ServerConfiguration
    public let storage: PostgresStorage
    public let metrics: ServerMetrics
    public let chats: ShardRegion<ChatEntity>
    public let devices: ShardRegion<DeviceEntity>
    let live: LiveDevices
    let sessions: ClusterSessions
    let writer: ChatStoreWriter
    let notifications: ClusterNotifications
    public let gateway: GatewayService
    public let ops: OpsHTTPService
    public let push: PushService
    public let adminToken: String
    let logger: Logger

    /// How often the node compares its live devices' chats with the database (what a lost
    /// notification left behind is delivered within about this long).
    static let repairInterval: Duration = .seconds(2)

    /// Connects to the cluster's PostgreSQL (refusing a schema other than this program's) and
    /// builds the node; `run` serves.
    public static func start(configuration: ServerConfiguration, logger: Logger) async throws -> ClusterNode {
        try configuration.validate()
        guard let url = configuration.postgres else { throw ConfigurationError("a cluster node needs postgres (--postgres URL)") }
        let storage = try await PostgresStorage.open(url: PostgresURL(url), migrate: false, logger: logger)
        do {
            return try ClusterNode(configuration: configuration, storage: storage, logger: logger)
        } catch {
            storage.close()
            throw error
        }
    }

    private init(configuration: ServerConfiguration, storage: PostgresStorage, logger: Logger) throws {
        self.configuration = configuration
        self.storage = storage
        self.logger = logger
        // The data directory holds only this node's admin token: nothing a message needs.
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        adminToken = try AdminToken.ensure(dataDirectory: configuration.dataDirectory)
        metrics = ServerMetrics(partitionCount: 1)

        devices = ShardRegion(kind: "device", context: configuration.deviceContext(storage: storage, metrics: metrics, logger: logger), configuration: configuration.shardRegions)
        chats = ShardRegion(kind: "chat", context: ChatEntity.Context(storage: storage), configuration: configuration.shardRegions)

        writer = ChatStoreWriter(store: storage)
        let node = "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let notifications = ClusterNotifications(storage: storage, node: node, logger: logger)
        sessions = ClusterSessions(storage: storage, node: node, logger: logger)
        live = LiveDevices(observer: sessions)
        self.notifications = notifications
        let authenticator = TokenAuthenticator(storage: storage, cacheDuration: .seconds(configuration.tokenCacheSeconds))
        push = PushService(
            configuration: configuration.push, authenticator: authenticator, devices: devices, live: live, storage: storage,
            receipts: DeliveryReceipts(chats: chats, devices: devices, logger: logger), metrics: metrics, logger: logger
        )
        let live = self.live
        let intake = ClusterIntake(
            storage: storage, chats: chats, store: writer, accepted: AcceptedMessages(capacity: configuration.maxPendingMessages),
            metrics: metrics, maxTextBytes: configuration.maxTextBytes
        ) { chatID, messages, members in
            // The members' devices here get the frames now; the other nodes hear of it.
            let devices = live.devices(of: members)
            if !devices.isEmpty {
                let pushes = messages.map(EncodedPush.init)
                for device in devices { device.notify(pushes) }
            }
            notifications.publish([.init(chatID: chatID, sequence: messages.map(\.sequence).max() ?? 0)])
        }
        gateway = GatewayService(
            configuration: configuration.gateway,
            resources: GatewayResources(intake: intake, authenticator: authenticator, configuration: configuration.gatewayResources, metrics: metrics, logger: logger),
            logger: logger,
            beforeBinding: {}
        )
        let gateway = self.gateway
        let writer = self.writer
        metrics.onScrape { [metrics, live] in
            metrics.recordLiveDevices(live.count)
            let writes = writer.statistics
            metrics.recordStoreWrites(transactions: writes.transactions, batches: writes.batches)
        }
        let admin = AdminAPI(token: adminToken, storage: storage, chats: chats, metrics: metrics, logger: logger)
        ops = OpsHTTPService(host: configuration.httpHost, port: configuration.httpPort, metrics: metrics, admin: admin, logger: logger) {
            gateway.port != nil
        }
    }

    /// The services in start order; a graceful shutdown stops them in reverse (the gateway first).
    public var services: [any Service] {
        [ClusterUpkeep(node: self), ops, push, gateway]
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully and closes the pool.
    public func run() async throws {
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        defer { storage.close() }
        try await group.run()
    }

    /// Another node committed messages: the members' devices here read them in their turn.
    func heard(_ news: [ClusterNotifications.ChatNews]) async {
        let members: [UInt64: [UInt64]]
        do {
            members = try await storage.members(ofChats: news.map(\.chatID))
        } catch {
            // The repair sweep delivers these within its interval.
            logger.warning("cannot read the members of chats another node wrote to", metadata: ["error": "\(error)"])
            return
        }
        for item in news {
            for device in live.devices(of: members[item.chatID] ?? []) { device.heard(chatID: item.chatID, through: item.sequence) }
        }
    }

    /// What the live devices here may have missed (a lost notification): every chat of their
    /// users against its last sequence. A device that knows it already does nothing.
    func repair() async {
        let users = live.users
        guard !users.isEmpty else { return }
        do {
            for head in try await storage.chatHeads(ofUsers: users) {
                for device in live.devices(of: [head.userID]) { device.heard(chatID: head.chatID, through: head.lastSequence) }
            }
        } catch {
            logger.warning("cluster repair sweep failed", metadata: ["error": "\(error)"])
        }
    }
}

/// Listens for the other nodes' news, and runs the repair sweep and the actors' upkeep.
struct ClusterUpkeep: Service {
    let node: ClusterNode

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await node.notifications.listen(
                        heard: { await node.heard($0) }, sessionMoved: { node.sessions.moved(deviceID: $0, epoch: $1) }, reconnected: { await node.repair() }
                    )
                }
                group.addTask {
                    var rounds = 0
                    while !Task.isCancelled {
                        do { try await Task.sleep(for: ClusterNode.repairInterval) } catch { return }
                        await node.repair()
                        rounds += 1
                        if rounds % 3 == 0 { await passivateIdle(chats: node.chats, devices: node.devices, metrics: node.metrics) }
                    }
                }
            }
        }
    }
}
