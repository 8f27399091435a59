import CoAP
import CourierActors
import CourierCore
import CourierFaults
import CourierGateway
import CourierIngest
import CourierLog
import CourierMemory
import CourierOps
import CourierPush
import CourierSQLite
import DTLS
import Foundation
import Logging
import ServiceLifecycle

/// One `courier-server` node, embedded: the log and the SQLite database in one data directory,
/// the CoAP gateway, the consumers and actors, and the operations listener.
public final class CourierNode: Sendable {
    public let configuration: ServerConfiguration
    public let storage: SQLiteStorage
    public let log: EmbeddedLog
    public let metrics: ServerMetrics
    public let chats: ShardRegion<ChatEntity>
    /// Devices with a push session now, by user: where stored messages are handed.
    let live = LiveDevices()
    public let devices: ShardRegion<DeviceEntity>
    public let accepted: AcceptedMessages
    public let consumers: ChatConsumers
    public let gateway: GatewayService
    public let ops: OpsHTTPService
    public let push: PushService
    /// Tells devices who came online or went offline among their chats' members.
    let presence: PresenceRelay
    /// The admin API's bearer token, from `<data directory>/admin.token`.
    public let adminToken: String
    let logger: Logger
    /// The DTLS layer's figures across the gateway's secure sockets.
    let dtls = DTLSStatistics()

    public static func storagePath(dataDirectory: String) -> String { "\(dataDirectory)/courier.sqlite3" }
    public static func logPath(dataDirectory: String) -> String { "\(dataDirectory)/log" }

    /// `testFaults` are for tests only: a server with any of them loses or repeats messages.
    public init(configuration: ServerConfiguration, testFaults: TestFaults = TestFaults(), logger: Logger) throws {
        try configuration.validate()
        try testFaults.validate()
        self.configuration = configuration
        self.logger = logger
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        storage = try SQLiteStorage(path: Self.storagePath(dataDirectory: configuration.dataDirectory))
        adminToken = try AdminToken.ensure(dataDirectory: configuration.dataDirectory)

        var logConfiguration = configuration.log
        if configuration.unsafeNoSync {
            logger.warning("unsafeNoSync is on: acknowledged messages can be lost in a power cut (benchmarks only)")
            logConfiguration.fileSystem = UnsafeNoSyncFileSystem()
        }
        log = try EmbeddedLog(directory: Self.logPath(dataDirectory: configuration.dataDirectory), configuration: logConfiguration)
        metrics = ServerMetrics(partitionCount: log.partitionCount)

        let ids = MessageIDGenerator(nodeID: configuration.nodeID)
        // Test faults stand between the consumers and the real log and store, as decorators.
        var consumedLog: any MessageLog = log
        var chatStore: any ChatBatchStore = storage
        if testFaults.isActive {
            logger.warning("TEST FAULTS ARE ON: this server loses, repeats or fails on purpose (\(testFaults.summary)); never use it for anything but tests")
            if let crashAt = testFaults.crashBeforeCommit { consumedLog = FaultyLog(wrapping: log, crashBeforeCommit: crashAt) }
            chatStore = FaultyChatStore(wrapping: storage, faults: testFaults, ids: ids, logger: logger)
        }
        let regionConfiguration = configuration.shardRegions
        devices = ShardRegion(kind: "device", context: configuration.deviceContext(storage: storage, metrics: metrics, logger: logger), configuration: regionConfiguration)
        let recent = RecentMessages()
        var chatContext = ChatEntity.Context(storage: storage)
        chatContext.recent = recent
        chats = ShardRegion(kind: "chat", context: chatContext, configuration: regionConfiguration)

        accepted = AcceptedMessages(capacity: configuration.maxPendingMessages)
        let dedupFilter = DedupFilter()
        consumers = ChatConsumers(
            log: consumedLog, storage: storage, store: chatStore, live: live, recent: recent, accepted: accepted, dedupFilter: dedupFilter, metrics: metrics,
            configuration: configuration.consumers, logger: logger
        )
        let authenticator = TokenAuthenticator(storage: storage, cacheDuration: .seconds(configuration.tokenCacheSeconds))
        push = try PushService(
            configuration: configuration.push, authenticator: authenticator, devices: devices, live: live, storage: storage,
            receipts: DeliveryReceipts(chats: chats, live: live, logger: logger), metrics: metrics, logger: logger
        )
        let presence = PresenceRelay(live: live, storage: storage, logger: logger)
        self.presence = presence
        let intake = MessageIntake(
            log: log, storage: storage,
            chats: chats, accepted: accepted, dedupFilter: dedupFilter, ids: ids,
            metrics: metrics, maxTextBytes: configuration.maxTextBytes
        )
        let consumers = self.consumers
        let storage = self.storage
        gateway = GatewayService(
            configuration: try configuration.gateway(storage: storage, dtls: dtls, logger: logger),
            resources: GatewayResources(intake: intake, authenticator: authenticator, configuration: configuration.gatewayResources, metrics: metrics, logger: logger,
                                        online: { await presence.online(among: $0) }),
            logger: logger,
            beforeBinding: {
                // A retry of a message still in the log but not stored must find it: open only
                // once the consumers have stored what the log held at startup.
                await consumers.waitUntilCaughtUp()
                // Everything in the log is stored now: no id handed out before may come again,
                // even if the wall clock went back across the restart.
                if let highest = try? await storage.maxServerMessageID() { ids.advance(past: highest) }
            }
        )
        let gateway = self.gateway
        metrics.onScrape { [metrics, live, dtls] in
            metrics.recordDTLS(dtls.snapshot)
            metrics.recordDedupEntries(await gateway.dedupEntries())
            metrics.recordLiveDevices(live.count)
            let writes = consumers.writer.statistics
            metrics.recordStoreWrites(transactions: writes.transactions, batches: writes.batches)
        }
        let admin = AdminAPI(token: adminToken, storage: storage, chats: chats, metrics: metrics, logger: logger)
        ops = OpsHTTPService(host: configuration.httpHost, port: configuration.httpPort, metrics: metrics, admin: admin, logger: logger) {
            consumers.caughtUp && gateway.isListening
        }
    }

    /// The services in start order; a graceful shutdown stops them in reverse: the gateway
    /// first (no new messages, in-flight appends answered), the consumers last (they commit).
    public var services: [any Service] {
        [ConsumersService(consumers: consumers), MaintenanceService(node: self), PresenceService(relay: presence), ops, push, gateway]
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully and closes the log.
    public func run() async throws {
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        defer { log.close() }
        try await group.run()
    }

    /// Publishes live actor counts, passivates idle actors, hands freed memory back to the
    /// system and applies log retention.
    func maintain(retentionCheck: Bool) async {
        // glibc keeps freed heap memory in its arenas; after a burst (a flood of pushes to
        // readers that were then disconnected) the resident size would stay at the peak.
        // Measured with PushTests' slow-reader test: about 50 MB retained per round without this.
        courier_release_free_memory()
        await passivateIdle(chats: chats, devices: devices, metrics: metrics)
        if retentionCheck {
            do {
                let deleted = try log.applyRetention(olderThan: .seconds(configuration.retentionHours * 3600))
                if deleted > 0 { logger.info("log retention deleted segments", metadata: ["segments": "\(deleted)"]) }
            } catch {
                logger.error("log retention failed", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// Passivates idle Chats and Devices and publishes how many stay loaded.
func passivateIdle(chats: ShardRegion<ChatEntity>, devices: ShardRegion<DeviceEntity>, metrics: ServerMetrics) async {
    for (kind, count) in [("chat", await chats.passivateIdleAndCount()), ("device", await devices.passivateIdleAndCount())] {
        metrics.recordLiveActors(type: kind, count: count)
    }
}

extension ShardRegion {
    /// Passivates idle entities, then counts the live ones.
    func passivateIdleAndCount() async -> Int {
        await passivateIdle()
        return await liveCount()
    }
}

/// The consumers as a service: on graceful shutdown each finishes and commits its batch.
struct ConsumersService: Service {
    let consumers: ChatConsumers

    func run() async throws {
        await withGracefulShutdownHandler {
            await consumers.run()
        } onGracefulShutdown: {
            consumers.stop()
        }
    }
}

/// Presence news to connected devices, a round every few seconds.
struct PresenceService: Service {
    let relay: PresenceRelay
    /// A cluster node's rows of who is online, refreshed beside the relay.
    var directory: ClusterPresence?

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await relay.run() }
                if let directory { group.addTask { await directory.run() } }
            }
        }
    }
}

/// Periodic upkeep: metrics of live actors, passivation, retention.
struct MaintenanceService: Service {
    let node: CourierNode

    func run() async throws {
        var rounds = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(5)) }
            rounds += 1
            await node.maintain(retentionCheck: rounds % 60 == 0)
        }
    }
}
