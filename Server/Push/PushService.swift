import CourierActors
import CourierCore
import CourierProtocol
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ServiceLifecycle
import UnixSignals

/// The WebSocket endpoint `/v1/push`: upgrades requests for that path from an allowed Origin
/// (or none) and runs one `PushSession` per connection, up to a bound.
public final class PushService: Service, Sendable {
    public struct Configuration: Sendable {
        public var host = "0.0.0.0"
        public var port = 8080
        /// Origins allowed at the upgrade; a request without Origin (a device, not a browser)
        /// is always allowed.
        public var allowedOrigins: Set<String> = []
        public var maxFrameBytes = 64 * 1024
        public var heartbeatInterval: Duration = .seconds(30)
        /// The first frame (Hello) must come within this.
        public var helloTimeout: Duration = .seconds(10)
        /// Open sessions; one more is closed at once with 1013 (try again later).
        public var maxSessions = 50_000
        /// Connections that have not yet shown a valid token (before the upgrade, or before
        /// Hello); at the bound the oldest of the source holding the most, whose Hello is not
        /// being checked, is closed to make room (see `Strangers`). Each is closed at the hello
        /// deadline (`helloTimeout`, counted from the TCP accept) if still a stranger.
        public var maxStrangers = 1_000
        /// Bytes of frames queued for one session's writer; pushes wait beyond it.
        public var maxOutboundBytes = 256 * 1024
        /// A session whose queued frames have not moved for this long is closed (the reader
        /// does not read); the device catches up by replay when it reconnects.
        public var slowReaderTimeout: Duration = .seconds(10)
        /// `wss://`: its port and the PEM certificate chain and key it serves with (read at
        /// start, and again by `reloadTLS` on SIGHUP); nil: no TLS listener.
        public var tls: (port: Int, certificateChainFile: String, privateKeyFile: String)?
        /// Whether the clear-text `ws://` port is opened (not with `requireSecure`).
        public var clearText = true
        public init() {}
    }

    enum Upgrade {
        case websocket(PushSession)
        /// Not a WebSocket upgrade to /v1/push from an allowed origin (403), or one session
        /// past the bound (closed with 1013).
        case refused
    }

    let configuration: Configuration
    let authenticator: TokenAuthenticator
    let devices: ShardRegion<DeviceEntity>
    /// Devices with a session now, by user: where the consumers hand new messages.
    let live: LiveDevices
    let storage: any ServerStorage
    /// Where acknowledgements go to be stored, and then become delivery receipts.
    let cursors: DeliveryCursorWriter
    let metrics: ServerMetrics
    let logger: Logger
    private let boundPort = NIOLockedValueBox<Int?>(nil)
    private let boundTLSPort = NIOLockedValueBox<Int?>(nil)
    /// What new TLS connections are served with; replaced whole by `reloadTLS`, so sessions
    /// already open keep theirs.
    private let tlsContext: NIOLockedValueBox<NIOSSLContext?>
    /// Every session from its upgrade to its connection's close (bounded by `maxSessions`), by
    /// its channel: an attached session has no task, so the shutdown finds them here to say
    /// goodbye, and the hello deadline finds an upgraded connection's session to say why.
    private let openSessions = NIOLockedValueBox<[ObjectIdentifier: PushSession]>([:])
    let watchdog = SessionWatchdog()
    let strangers: Strangers

    /// Throws when the TLS certificate or key cannot be used.
    package init(
        configuration: Configuration, authenticator: TokenAuthenticator, devices: ShardRegion<DeviceEntity>, live: LiveDevices,
        storage: any ServerStorage, receipts: DeliveryReceipts, metrics: ServerMetrics, logger: Logger
    ) throws {
        tlsContext = NIOLockedValueBox(try configuration.tls.map { try Self.makeTLSContext($0.certificateChainFile, $0.privateKeyFile) })
        self.configuration = configuration
        self.authenticator = authenticator
        self.devices = devices
        self.live = live
        self.storage = storage
        cursors = DeliveryCursorWriter(storage: storage, receipts: receipts, thread: storage.executor as? DedicatedThreadExecutor, logger: logger)
        strangers = Strangers(bound: configuration.maxStrangers)
        self.metrics = metrics
        self.logger = logger
        metrics.onScrape { [strangers] in metrics.recordPushStrangers(strangers.count) }
    }

    /// The `ws://` port once bound (nil before, or when not opened).
    public var port: Int? { boundPort.withLockedValue { $0 } }
    /// The `wss://` port once bound (nil before, or without TLS).
    public var tlsPort: Int? { boundTLSPort.withLockedValue { $0 } }

    static func makeTLSContext(_ chain: String, _ key: String) throws -> NIOSSLContext {
        let certificates = try NIOSSLCertificate.fromPEMFile(chain).map { NIOSSLCertificateSource.certificate($0) }
        let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: certificates, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        return try NIOSSLContext(configuration: configuration)
    }

    /// Reads the certificate and key files again (SIGHUP): new connections get them, open
    /// sessions keep what they started with. A file that cannot be used leaves the old ones.
    public func reloadTLS() {
        guard let tls = configuration.tls else { return }
        do {
            let context = try Self.makeTLSContext(tls.certificateChainFile, tls.privateKeyFile)
            tlsContext.withLockedValue { $0 = context }
            logger.info("push TLS certificate reloaded", metadata: ["certificate": "\(tls.certificateChainFile)"])
        } catch {
            logger.error("push TLS certificate not reloaded; the previous one stays", metadata: ["error": "\(error)"])
        }
    }

    public func run() async throws {
        instantiatePipelineTypes()
        var listeners: [(NIOAsyncChannel<EventLoopFuture<Upgrade>, Never>, tls: Bool)] = []
        do {
            if configuration.clearText { listeners.append((try await listen(port: configuration.port, tls: false), false)) }
            if let tls = configuration.tls { listeners.append((try await listen(port: tls.port, tls: true), true)) }
        } catch {
            for (listener, _) in listeners { try? await listener.channel.close() }
            throw error
        }
        for (listener, tls) in listeners {
            (tls ? boundTLSPort : boundPort).withLockedValue { $0 = listener.channel.localAddress?.port }
            logger.info("push WebSocket listening", metadata: ["address": "\(listener.channel.localAddress.map { "\($0)" } ?? "?")", "tls": "\(tls)"])
        }
        let serving = listeners
        // Ends (cancelled) once the accept loops and every session have.
        let sweeping = Task { [watchdog] in await watchdog.run(on: MultiThreadedEventLoopGroup.singleton.next()) }
        defer { sweeping.cancel() }
        // SIGHUP: a renewed certificate is taken without dropping a session.
        let reloading = Task { [weak self] in
            guard self?.configuration.tls != nil else { return }
            for await _ in await UnixSignalsSequence(trapping: .sighup) { self?.reloadTLS() }
        }
        defer { reloading.cancel() }
        do {
            try await cancelWhenGracefulShutdown {
                try await withThrowingDiscardingTaskGroup { listening in
                    for (listener, _) in serving {
                        listening.addTask {
                            try await withThrowingDiscardingTaskGroup { sessions in
                                try await listener.executeThenClose { inbound in
                                    for try await upgrade in inbound {
                                        sessions.addTask { await self.handle(upgrade) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } catch is CancellationError {
            // The way a graceful shutdown ends the accept loop; not a failure.
        }
        await closeOpenSessions()
        // The sessions are over: the cursors their last acknowledgements moved are stored before
        // the store closes (in a task of its own, which the shutdown has not cancelled).
        let cursors = self.cursors
        await Task { await cursors.drain(timeout: .seconds(2)) }.value
        boundPort.withLockedValue { $0 = nil }
        boundTLSPort.withLockedValue { $0 = nil }
        logger.info("push WebSocket stopped")
    }

    /// One listener; with `tls`, each connection starts with a TLS handshake (the context
    /// current at its accept).
    private func listen(port: Int, tls: Bool) async throws -> NIOAsyncChannel<EventLoopFuture<Upgrade>, Never> {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // A fleet reconnects at once after a restart; the default 256 overflows, and the
            // kernel then drops connections the devices believe open.
            .serverChannelOption(.backlog, value: 4096)
            // A connection keeps its receive buffer between reads; NIO's first one is 2 KiB,
            // where a device sends acknowledgements of a few dozen bytes. The buffer grows
            // (and stays grown) for a connection whose reads fill it.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 64 * 1024))
            .bind(host: configuration.host, port: port) { channel in
                let stranger = self.admitStranger(channel)
                if tls, let context = self.tlsContext.withLockedValue({ $0 }) {
                    do {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                return self.configurePipeline(channel, stranger: stranger)
            }
    }

    /// Fragments one message may come in; more closes the session (1009). Bounds the joining
    /// work of a peer that sends a message a few bytes at a time.
    static let maxFragments = 1_024

    /// One push connection's pipeline: HTTP, upgraded to a WebSocket on `/v1/push` from an
    /// allowed origin (a `PushSession` at its end), refused with 403 otherwise.
    private func configurePipeline(_ channel: any Channel, stranger: UInt64) -> EventLoopFuture<EventLoopFuture<Upgrade>> {
        let configuration = self.configuration
        return channel.eventLoop.makeCompletedFuture {
            let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                maxFrameSize: configuration.maxFrameBytes,
                shouldUpgrade: { channel, head in
                    let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
                    let origin = head.headers.first(name: "Origin")
                    guard path == "/v1/push", origin == nil || configuration.allowedOrigins.contains(origin!) else {
                        return channel.eventLoop.makeSucceededFuture(nil)
                    }
                    return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
                },
                upgradePipelineHandler: { channel, head in
                    channel.eventLoop.makeCompletedFuture {
                        try self.startSession(on: channel, queryToken: Self.queryToken(head.uri), stranger: stranger)
                    }
                }
            )
            let upgradeConfiguration = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    // Not a WebSocket upgrade to /v1/push from an allowed origin: 403, close.
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(RefusingHandler())
                        return .refused
                    }
                }
            )
            return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
                configuration: .init(upgradeConfiguration: upgradeConfiguration)
            )
        }
    }

    /// Counts a new connection as a stranger until its Hello is authenticated: one stranger not
    /// being checked goes if the bound is reached (see `Strangers`), and this one goes at the
    /// hello deadline unless it authenticated by then.
    private func admitStranger(_ channel: any Channel) -> UInt64 {
        let (ticket, evicted) = strangers.admit(channel, from: Strangers.Source(channel.remoteAddress))
        if let evicted {
            metrics.countPushClose(reason: "strangers_bound")
            evicted.close(promise: nil)
        }
        let timer = channel.eventLoop.scheduleTask(in: TimeAmount(configuration.helloTimeout)) { [strangers, metrics] in
            guard strangers.leave(ticket) else { return }
            // An upgraded connection hears why from its session (1008); one not upgraded is dropped.
            if let session = self.openSessions.withLockedValue({ $0[ObjectIdentifier(channel)] }) {
                session.helloTimedOut()
            } else {
                metrics.countPushClose(reason: "no_hello")
                channel.close(promise: nil)
            }
        }
        // The timer goes with its connection, so pending timers (and the channels they hold)
        // are bounded by the open connections, not by the accept rate times the deadline.
        channel.closeFuture.whenComplete { [strangers] _ in
            strangers.leave(ticket)
            timer.cancel()
        }
        return ticket
    }

    /// The upgraded connection's session, if the bound admits one more: the frame aggregator
    /// and the session's handler end the pipeline. One past the bound is closed at once with
    /// 1013 (try again later).
    private func startSession(on channel: any Channel, queryToken: String?, stranger: UInt64) throws -> Upgrade {
        let key = ObjectIdentifier(channel)
        // Counted and inserted in one step, so concurrent upgrades cannot pass the bound; one
        // past it gets no session at all.
        let admitted: PushSession? = try openSessions.withLockedValue { open in
            guard open.count < configuration.maxSessions else { return nil }
            let session = try PushSession(service: self, channel: channel, queryToken: queryToken, stranger: stranger)
            open[key] = session
            return session
        }
        guard let session = admitted else {
            metrics.countPushClose(reason: "too_many_sessions")
            var reason = ByteBuffer()
            reason.write(webSocketErrorCode: .unknown(1013))  // RFC 6455 registry: Try Again Later
            reason.writeString("too many sessions")
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: reason)).whenComplete { _ in
                channel.close(promise: nil)
            }
            return .refused
        }
        channel.closeFuture.whenComplete { _ in self.openSessions.withLockedValue { _ = $0.removeValue(forKey: key) } }
        try channel.pipeline.syncOperations.addHandler(NIOWebSocketFrameAggregator(
            minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: Self.maxFragments, maxAccumulatedFrameSize: configuration.maxFrameBytes
        ))
        try channel.pipeline.syncOperations.addHandler(PushSessionHandler(session: session))
        return .websocket(session)
    }

    /// Builds the pipeline once on this thread before the listener opens. The Swift runtime has
    /// crashed (a null metadata in swift_conformsToProtocol) when many connections instantiate
    /// this pipeline's generic types for the first time at once, on several event loops, as
    /// happens when every device reconnects the moment a restarted server opens its port.
    private func instantiatePipelineTypes() {
        let channel = EmbeddedChannel()
        _ = try? configurePipeline(channel, stranger: 0).wait()
        // An upgrade request takes it through the HTTP decoder and the WebSocket upgrade too.
        _ = try? channel.writeInbound(ByteBuffer(string: "GET /v1/push HTTP/1.1\r\nHost: courier\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }

    /// The shutdown's goodbye (1001) to every open session; returns once their connections
    /// are closed, which each is within a second (`PushSession.goAway`).
    private func closeOpenSessions() async {
        for session in openSessions.withLockedValue({ Array($0.values) }) { session.goAway() }
        let deadline = ContinuousClock.now + .seconds(3)
        while !openSessions.withLockedValue({ $0.isEmpty }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    private func handle(_ upgrade: EventLoopFuture<Upgrade>) async {
        guard case .websocket(let session)? = try? await upgrade.get() else { return }
        await session.run()
    }
}

extension PushService {
    /// The value of `t=` in a request target's query (`/v1/push?t=TOKEN`), percent-decoded.
    static func queryToken(_ uri: String) -> String? {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") where pair.hasPrefix("t=") {
            return String(pair.dropFirst(2)).removingPercentEncoding
        }
        return nil
    }
}

/// Answers a plain HTTP request (no upgrade, wrong path or origin) with 403 and closes.
final class RefusingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: "0")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .forbidden, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.close(promise: nil)
    }
}
