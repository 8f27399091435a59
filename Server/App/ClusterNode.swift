import CoAP
import CourierActors
import CourierCore
import CourierGateway
import CourierIngest
import CourierOps
import CourierPostgres
import CourierProtocol
import CourierPush
import DTLS
import Foundation
import Logging
import ServiceLifecycle

/// One `courier-server` node of a cluster: the same CoAP gateway, push sessions, actors and
/// operations listener as the embedded node, on the cluster's PostgreSQL instead of a log and
/// SQLite. Any node takes any device; a message is acknowledged once committed to PostgreSQL
/// (`ClusterIntake`), pushed at once to the members' devices with a session on this node, and
/// announced to the other nodes (`ClusterNotifications`) with its push frame, which they push to
/// their devices in turn (or read from the database what the news left out or lost).
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
    let receipts: DeliveryReceipts
    /// Presence: this node's in the database, everyone's to the devices here.
    let presence: PresenceRelay
    let presenceDirectory: ClusterPresence
    /// The last messages of each chat, as receipts need them (from this node's commits and the
    /// others' news).
    let recent = RecentMessages()
    public let gateway: GatewayService
    public let ops: OpsHTTPService
    public let push: PushService
    public let adminToken: String
    let logger: Logger
    /// The DTLS layer's figures across the gateway's secure sockets.
    let dtls = DTLSStatistics()

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
        var chatContext = ChatEntity.Context(storage: storage)
        chatContext.recent = recent
        chats = ShardRegion(kind: "chat", context: chatContext, configuration: configuration.shardRegions)

        writer = ChatStoreWriter(store: storage)
        let node = "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let notifications = ClusterNotifications(storage: storage, node: node, logger: logger)
        sessions = ClusterSessions(storage: storage, node: node, logger: logger)
        live = LiveDevices(observer: sessions)
        self.notifications = notifications
        let authenticator = TokenAuthenticator(storage: storage, cacheDuration: .seconds(configuration.tokenCacheSeconds))
        receipts = DeliveryReceipts(chats: chats, live: live, logger: logger) { notifications.publish($0) }
        presenceDirectory = ClusterPresence(storage: storage, notifications: notifications, live: live, logger: logger)
        presence = PresenceRelay(live: live, storage: storage, directory: presenceDirectory, logger: logger)
        let presence = self.presence
        push = try PushService(
            configuration: configuration.push, authenticator: authenticator, devices: devices, live: live, storage: storage,
            receipts: receipts, metrics: metrics, logger: logger
        )
        let live = self.live
        let recent = self.recent
        let intake = ClusterIntake(
            storage: storage, chats: chats, store: writer, accepted: AcceptedMessages(capacity: configuration.maxPendingMessages),
            metrics: metrics, maxTextBytes: configuration.maxTextBytes
        ) { chatID, messages, members in
            // The members' devices here get the frames now; the other nodes hear of it, frames included.
            let pushes = messages.map(EncodedPush.init)
            for device in live.devices(of: members) { device.notify(pushes) }
            recent.add(messages, chatID: chatID)
            notifications.publish([ClusterNews.Chat(
                chatID: chatID, sequence: messages.map(\.sequence).max() ?? 0,
                members: members.count <= ClusterNode.maxMembersInNews ? members.sorted() : nil,
                messages: pushes.map { ClusterNews.Message(sequence: $0.sequence, frame: $0.frame) }
            )])
        }
        gateway = GatewayService(
            configuration: try configuration.gateway(storage: storage, dtls: dtls, logger: logger),
            resources: GatewayResources(intake: intake, authenticator: authenticator, configuration: configuration.gatewayResources, metrics: metrics, logger: logger,
                                        online: { await presence.online(among: $0) }),
            logger: logger,
            beforeBinding: {}
        )
        let gateway = self.gateway
        let writer = self.writer
        metrics.onScrape { [metrics, live, dtls] in
            metrics.recordDTLS(dtls.snapshot)
            metrics.recordLiveDevices(live.count)
            let writes = writer.statistics
            metrics.recordStoreWrites(transactions: writes.transactions, batches: writes.batches)
            metrics.recordClusterNews(notifications.statistics)
        }
        let admin = AdminAPI(token: adminToken, storage: storage, chats: chats, metrics: metrics, logger: logger)
        ops = OpsHTTPService(host: configuration.httpHost, port: configuration.httpPort, metrics: metrics, admin: admin, logger: logger) {
            gateway.isListening
        }
    }

    /// The services in start order; a graceful shutdown stops them in reverse (the gateway first).
    public var services: [any Service] {
        [ClusterUpkeep(node: self), PresenceService(relay: presence, directory: presenceDirectory), ops, push, gateway]
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

    /// A chat's news names its members up to this many (a larger chat's are read by the others).
    static let maxMembersInNews = 256

    /// Another node committed messages or stored acknowledgements: the members' devices here get
    /// the messages (the frames that came along at once, the rest read in their turn), and
    /// senders connected here get the receipts the acknowledgements complete.
    func heard(_ news: ClusterNews) async {
        if !news.presenceChanged.isEmpty { presence.heardElsewhere(news.presenceChanged) }
        var toRead = news.chats.filter { $0.members == nil }.map(\.chatID)
        var acknowledgementsToCheck: [ClusterNews.Acknowledgement] = []
        for acknowledgement in news.acknowledgements where !(await receipts.acknowledgedElsewhere(acknowledgement, activating: false)) {
            acknowledgementsToCheck.append(acknowledgement)
        }
        toRead += acknowledgementsToCheck.map(\.chatID)
        var members: [UInt64: [UInt64]] = [:]
        if !toRead.isEmpty {
            do {
                members = try await storage.members(ofChats: Array(Set(toRead)))
            } catch {
                // The repair sweep delivers these messages within its interval; receipts are a courtesy.
                logger.warning("cannot read the members of chats another node wrote to", metadata: ["error": "\(error)"])
            }
        }
        for chat in news.chats {
            let decoded = chat.messages.compactMap { message -> (ClusterNews.Message, ChatMessage)? in
                guard case .push(.message(let stored))? = try? ServerFrame(serializedBytes: message.frame) else { return nil }
                return (message, stored)
            }
            let pushes = decoded.map { EncodedPush(chatID: chat.chatID, sequence: $0.0.sequence, senderDeviceID: $0.1.senderDeviceID, frame: $0.0.frame) }
            rememberForReceipts(decoded.map(\.1), chatID: chat.chatID)
            for device in live.devices(of: chat.members ?? members[chat.chatID] ?? []) {
                device.heard(chatID: chat.chatID, through: chat.sequence, messages: pushes)
            }
        }
        // A chat not active here matters only if one of its members is connected here.
        for acknowledgement in acknowledgementsToCheck where !live.devices(of: members[acknowledgement.chatID] ?? []).isEmpty {
            _ = await receipts.acknowledgedElsewhere(acknowledgement, activating: true)
        }
    }

    /// What receipts need of another node's messages, so that they are not read from the database.
    private func rememberForReceipts(_ messages: [ChatMessage], chatID: UInt64) {
        let entries = messages.map { stored in
            (sequence: stored.chatSequence, entry: RecentMessages.Entry(senderUserID: stored.senderUserID, serverMessageID: stored.serverMessageID, clientMessageID: stored.clientMessageID))
        }
        recent.add(entries, chatID: chatID)
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
