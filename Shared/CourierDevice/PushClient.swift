import CoAP
import CourierProtocol
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import WebSocketFraming

/// Where a device keeps what it has received; the push client keeps it consecutive.
public protocol PushStore: Sendable {
    /// Per chat, the highest sequence held with every one after the chat's first held message
    /// also held.
    func cursors() async throws -> [ChatCursor]
    /// Messages that each follow what is held of their chat, in order.
    func store(_ messages: [ChatMessage]) async throws
    /// A message this device's user sent has reached every device of every other member.
    func delivered(_ receipt: DeliveryReceipt) async
    /// Users who share a chat with this device came online or went offline.
    func presence(_ presence: Presence) async
}

extension PushStore {
    /// Presence is for screens; a store that shows none ignores it.
    public func presence(_ presence: Presence) async {}
}

/// A store that keeps what it is given in memory and never waits, like the simulator's
/// devices. The push client then handles each frame where NIO reads it, on the connection's
/// event loop: no task and no async channel between a push and its acknowledgement (that
/// machinery was a fifth of the simulator's CPU under `scripts/bench-mqtt`).
public protocol ImmediatePushStore: PushStore {
    func heldCursors() -> [ChatCursor]
    /// Called on the session's event loop: it must not block.
    func storeNow(_ messages: [ChatMessage])
    func deliveredNow(_ receipt: DeliveryReceipt)
    func presenceNow(_ presence: Presence)
}

extension ImmediatePushStore {
    public func cursors() async throws -> [ChatCursor] { heldCursors() }
    public func store(_ messages: [ChatMessage]) async throws { storeNow(messages) }
    public func delivered(_ receipt: DeliveryReceipt) async { deliveredNow(receipt) }
    public func presence(_ presence: Presence) async { presenceNow(presence) }
    public func presenceNow(_ presence: Presence) {}
}

/// A device's push session, kept open: connects to `/v1/push`, says what the device holds,
/// stores what the server pushes in chat order (dropping duplicates, filling a gap by sync,
/// never skipping it), acknowledges what it stored, heartbeats, and reconnects with backoff
/// and jitter whenever the session ends, until cancelled or refused (bad token).
public final class PushClient: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var token: String
        public var clientName = "courier"
        public var initialBackoff: Duration = .milliseconds(500)
        public var maxBackoff: Duration = .seconds(30)
        public var connectTimeout: Duration = .seconds(10)
        /// Largest frame accepted from the server (sync responses are the large ones).
        public var maxFrameBytes = 4 * 1024 * 1024
        /// The local address to connect from (nil: the system's choice). A fleet on one
        /// machine spreads over several loopback addresses to go past one address's ports.
        public var localHost: String?
        /// Called with every event as it happens (`events` keeps only the newest).
        public var observer: (@Sendable (Event) -> Void)?
        /// Other nodes of the same cluster: a connection that fails moves on to the next in
        /// turn (a session that ended tries its own node first again).
        public var otherServers: [(host: String, port: Int)] = []
        /// `wss://`: every connection starts with a TLS handshake on this context (its trust
        /// roots check the server's certificate chain; a host name is checked too).
        public var tls: NIOSSLContext?

        /// `host`:`port` first, then `otherServers`.
        var servers: [(host: String, port: Int)] { [(host, port)] + otherServers }

        public init(host: String, port: Int, token: String) {
            self.host = host
            self.port = port
            self.token = token
        }
    }

    public enum Event: Sendable, Equatable {
        case connecting
        case connected(Welcome)
        /// The session ended; the next try is after `retryIn`.
        case disconnected(reason: String, retryIn: Duration)
        /// The server will not take this device (bad token, or a newer session of it took
        /// over): the client stops.
        case refused(reason: String)
    }

    public let configuration: Configuration
    private let store: any PushStore
    /// The newest events, for a status line; older ones are dropped (bounded at 64).
    public let events: AsyncStream<Event>
    private let eventSink: AsyncStream<Event>.Continuation
    private let sessionChannel = NIOLockedValueBox<(any Channel)?>(nil)

    public init(configuration: Configuration, store: any PushStore) {
        self.configuration = configuration
        self.store = store
        (events, eventSink) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(64))
    }

    private func emit(_ event: Event) {
        configuration.observer?(event)
        eventSink.yield(event)
    }

    /// Keeps a session open until cancelled or refused. Every session uses one event loop,
    /// and the session's tasks run on it (`EventLoopTaskExecutor`).
    public func run() async {
        let executor = EventLoopTaskExecutor(MultiThreadedEventLoopGroup.singleton.next())
        await withTaskExecutorPreference(executor) { await keepSessionOpen(on: executor.eventLoop) }
    }

    private func keepSessionOpen(on eventLoop: any EventLoop) async {
        var failures = 0
        var server = 0
        let servers = configuration.servers
        while !Task.isCancelled {
            emit(.connecting)
            let end = await session(to: servers[server % servers.count], on: eventLoop)
            switch end {
            case .refused(let reason):
                emit(.refused(reason: reason))
                eventSink.finish()
                return
            case .ended(let reason, let wasWelcomed):
                failures = wasWelcomed ? 1 : failures + 1
                if !wasWelcomed { server += 1 }
                let wait = backoff(failures)
                emit(.disconnected(reason: reason, retryIn: wait))
                try? await Task.sleep(for: wait)
            }
        }
        eventSink.finish()
    }

    /// Drops the current session at once (as a network loss would); `run` reconnects.
    public func dropSession() {
        sessionChannel.withLockedValue { $0 }?.close(promise: nil)
    }

    enum SessionEnd: Equatable, Sendable {
        case ended(reason: String, wasWelcomed: Bool)
        case refused(String)
    }

    /// What a close frame from the server means. A bad token (1008 "bad token", after an
    /// unauthorized `Error` frame) and a newer session of this device ("replaced") end for good.
    /// Every other close is tried again with backoff, other 1008s included: the server also
    /// closes with 1008 when the Hello came too late, as it does when TCP retransmits it on a
    /// lossy path, and a device that gave up then never reconnected.
    static func end(closeCode code: UInt16, reason: String, welcomed: Bool) -> SessionEnd {
        if (code == 1008 && reason == "bad token") || reason.hasPrefix("replaced") { return .refused("closed \(code) \(reason)") }
        return .ended(reason: "closed \(code) \(reason)", wasWelcomed: welcomed)
    }

    private enum Upgrade<Session: Sendable>: Sendable {
        case websocket(Session)
        case refused(HTTPResponseStatus)
    }

    private enum Opened<Session: Sendable> {
        case websocket(Session)
        case failed(SessionEnd)
    }

    /// `connect`, with a refusal or a failure turned into how the session ended.
    private func open<Session: Sendable>(
        _ server: (host: String, port: Int), on eventLoop: any EventLoop, upgraded: @escaping @Sendable (any Channel) throws -> Session
    ) async -> Opened<Session> {
        do {
            switch try await connect(to: server, on: eventLoop, upgraded: upgraded) {
            case .websocket(let session): return .websocket(session)
            case .refused(let status): return .failed(.ended(reason: "upgrade refused: \(status.code)", wasWelcomed: false))
            }
        } catch {
            return .failed(.ended(reason: "cannot connect: \(error)", wasWelcomed: false))
        }
    }

    private func session(to server: (host: String, port: Int), on eventLoop: any EventLoop) async -> SessionEnd {
        let cursors: [ChatCursor]
        do {
            cursors = try await store.cursors()
        } catch {
            return .ended(reason: "cannot read what the device holds: \(error)", wasWelcomed: false)
        }
        let hello = ClientFrame.hello(Hello(token: configuration.token, have: cursors, clientName: configuration.clientName))
        let state = SessionState()
        if let immediate = store as? any ImmediatePushStore {
            return await sessionOnLoop(to: server, on: eventLoop, hello: hello, reception: PushReception(cursors: cursors), store: immediate, state: state)
        }
        return await sessionInTask(to: server, on: eventLoop, hello: hello, reception: PushReception(cursors: cursors), state: state)
    }

    /// A session whose frames a task reads and stores, for a store that waits (SQLite).
    private func sessionInTask(
        to server: (host: String, port: Int), on eventLoop: any EventLoop, hello: ClientFrame, reception: PushReception, state: SessionState
    ) async -> SessionEnd {
        let channel: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>
        switch await open(server, on: eventLoop, upgraded: { try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: $0) }) {
        case .websocket(let upgraded): channel = upgraded
        case .failed(let end): return end
        }
        sessionChannel.withLockedValue { $0 = channel.channel }
        defer { sessionChannel.withLockedValue { $0 = nil } }
        do {
            return try await channel.executeThenClose { inbound, outbound in
                let writer = FrameWriter(state: state) { try await outbound.write($0) }
                try await writer.send(hello)
                return try await runUntilEnded(writer, state, on: eventLoop) {
                    try await self.read(inbound, writer, state, reception)
                }
            }
        } catch {
            return .ended(reason: "\(error)", wasWelcomed: state.welcomed)
        }
    }

    /// A session whose frames are handled where NIO reads them (`ImmediateSession`).
    private func sessionOnLoop(
        to server: (host: String, port: Int), on eventLoop: any EventLoop, hello: ClientFrame, reception: PushReception,
        store: any ImmediatePushStore, state: SessionState
    ) async -> SessionEnd {
        let emit: @Sendable (Event) -> Void = { [weak self] in self?.emit($0) }
        let opened = await open(server, on: eventLoop) { channel in
            let ended = channel.eventLoop.makePromise(of: SessionEnd.self)
            do {
                // The upgrade put the WebSocket encoder in place: the answers are written from it.
                let encoder = try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
                try channel.pipeline.syncOperations.addHandler(ImmediateSession(reception: reception, store: store, state: state, ended: ended, encoder: encoder, emit: emit))
            } catch {
                ended.fail(error)
                throw error
            }
            return ImmediateSession.Handle(channel: channel, ended: ended.futureResult)
        }
        let (channel, ended): (any Channel, EventLoopFuture<SessionEnd>)
        switch opened {
        case .websocket(let handle): (channel, ended) = (handle.channel, handle.ended)
        case .failed(let end): return end
        }
        sessionChannel.withLockedValue { $0 = channel }
        defer {
            sessionChannel.withLockedValue { $0 = nil }
            channel.close(promise: nil)
        }
        do {
            let writer = FrameWriter(state: state) { try await channel.writeAndFlush($0) }
            try await writer.send(hello)
            return try await runUntilEnded(writer, state, on: eventLoop) {
                // A future's wait ignores cancellation: when the heartbeat or the silence watch
                // ends the session, closing the channel is what ends this wait.
                try await withTaskCancellationHandler { try await ended.get() } onCancel: { channel.close(promise: nil) }
            }
        } catch {
            return .ended(reason: "\(error)", wasWelcomed: state.welcomed)
        }
    }

    /// Heartbeats and watches for silence beside `reading` until one of them ends the session.
    private func runUntilEnded(
        _ writer: FrameWriter, _ state: SessionState, on eventLoop: any EventLoop, reading: @escaping @Sendable () async throws -> SessionEnd?
    ) async throws -> SessionEnd {
        try await withThrowingTaskGroup(of: SessionEnd?.self) { group in
            group.addTask { try await self.heartbeat(writer, state, on: eventLoop) }
            group.addTask { try await reading() }
            group.addTask { try await self.watchSilence(state, on: eventLoop) }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            return .ended(reason: "session ended", wasWelcomed: state.welcomed)
        }
    }

    /// Connects and upgrades to a WebSocket whose whole messages (fragments joined by NIO's
    /// aggregator, within `maxFrameBytes`) reach what `upgraded` adds to the pipeline.
    private func connect<Session: Sendable>(
        to server: (host: String, port: Int), on eventLoop: any EventLoop, upgraded: @escaping @Sendable (any Channel) throws -> Session
    ) async throws -> Upgrade<Session> {
        let configuration = self.configuration
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
        if let localHost = configuration.localHost {
            bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: localHost, port: 0))
        }
        let upgrade: EventLoopFuture<Upgrade<Session>> = try await bootstrap
            .connect(host: server.host, port: server.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = configuration.tls {
                        // A name goes in SNI and is checked against the certificate; NIOSSL takes
                        // no address there, so by address only the chain is checked (`tlsContext`).
                        let isAddress = (try? SocketAddress(ipAddress: server.host, port: 0)) != nil
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : server.host))
                    }
                    let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade<Session>>(
                        maxFrameSize: configuration.maxFrameBytes,
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    NIOWebSocketFrameAggregator(
                                        minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: Self.maxFragments,
                                        maxAccumulatedFrameSize: configuration.maxFrameBytes
                                    )
                                )
                                return .websocket(try upgraded(channel))
                            }
                        }
                    )
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: "\(server.host):\(server.port)")
                    headers.add(name: "Content-Length", value: "0")
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/push", headers: headers)
                    let upgradeConfiguration = NIOTypedHTTPClientUpgradeConfiguration(
                        upgradeRequestHead: head,
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            channel.eventLoop.makeCompletedFuture { .refused(.forbidden) }
                        }
                    )
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: .init(upgradeConfiguration: upgradeConfiguration)
                    )
                }
            }
        return try await upgrade.get()
    }

    /// The most fragments one message from the server may come in (as the server allows).
    static let maxFragments = 1_024

    /// Sends a Heartbeat whenever nothing was sent for the interval the Welcome announced.
    private func heartbeat(_ writer: FrameWriter, _ state: SessionState, on eventLoop: any EventLoop) async throws -> SessionEnd? {
        while !Task.isCancelled {
            guard let interval = state.heartbeatInterval else {
                try await eventLoop.sleep(for: .milliseconds(100))
                continue
            }
            let idle = ContinuousClock.now - state.lastSent
            if idle >= interval {
                try await writer.send(.heartbeat(Heartbeat(sentAtMs: Int64(Date().timeIntervalSince1970 * 1000))))
            } else {
                try await eventLoop.sleep(for: interval - idle)
            }
        }
        return nil
    }

    /// Ends the session when the server has said nothing for three heartbeat intervals: it
    /// answers every heartbeat, so silence means a frozen server or a dead path that TCP alone
    /// would take many minutes to notice.
    private func watchSilence(_ state: SessionState, on eventLoop: any EventLoop) async throws -> SessionEnd? {
        while !Task.isCancelled {
            let limit = (state.heartbeatInterval ?? configuration.connectTimeout) * 3
            let silent = ContinuousClock.now - state.lastReceived
            if silent >= limit { return .ended(reason: "server silent for \(silent)", wasWelcomed: state.welcomed) }
            // Until the Welcome names the interval, look every second (the limit may shrink);
            // after it, a wake-up per interval, not per second: a fleet of thousands of
            // sessions in one simulator would otherwise spend its CPU on timers.
            try await eventLoop.sleep(for: min(limit - silent, state.heartbeatInterval ?? .seconds(1)))
        }
        return nil
    }

    private func read(
        _ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>, _ writer: FrameWriter, _ state: SessionState, _ reception: PushReception
    ) async throws -> SessionEnd? {
        var reception = reception
        for try await frame in inbound {
            state.received()
            switch reception.react(to: frame) {
            case .pong(let pong):
                try await writer.write(pong)
            case .closed(let code, let reason):
                return Self.end(closeCode: code, reason: reason, welcomed: state.welcomed)
            case .welcomed(let welcome):
                state.welcome(interval: welcome.heartbeatInterval)
                emit(.connected(welcome))
            case .store(let messages, let replies):
                if !messages.isEmpty { try await store.store(messages) }
                for reply in replies { try await writer.send(reply) }
            case .delivered(let receipt):
                await store.delivered(receipt)
            case .presence(let presence):
                await store.presence(presence)
            case .refused(let reason):
                return .refused(reason)
            case .nothing:
                break
            }
        }
        return .ended(reason: "connection closed", wasWelcomed: state.welcomed)
    }

    private func backoff(_ failures: Int) -> Duration {
        Backoff.delay(failures: failures, initial: configuration.initialBackoff, maximum: configuration.maxBackoff)
    }
}

/// What the reader, the heartbeat and the writer of one session share.
private final class SessionState: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var interval: Duration?
    private var sentAt = ContinuousClock.now
    private var receivedAt = ContinuousClock.now

    var heartbeatInterval: Duration? { lock.withLock { interval } }
    var welcomed: Bool { lock.withLock { interval != nil } }
    var lastSent: ContinuousClock.Instant { lock.withLock { sentAt } }
    var lastReceived: ContinuousClock.Instant { lock.withLock { receivedAt } }
    func received() { lock.withLock { receivedAt = ContinuousClock.now } }
    func welcome(interval: Duration) { lock.withLock { self.interval = interval } }
    func sent() { lock.withLock { sentAt = ContinuousClock.now } }
}

/// Masked client frames (RFC 6455 requires a client to mask every frame).
private struct FrameWriter: Sendable {
    let state: SessionState
    let output: @Sendable (WebSocketFrame) async throws -> Void

    init(state: SessionState, output: @escaping @Sendable (WebSocketFrame) async throws -> Void) {
        self.state = state
        self.output = output
    }

    func send(_ frame: ClientFrame) async throws {
        try await write(ClientFrame.webSocketFrame(frame))
    }

    func write(_ frame: WebSocketFrame) async throws {
        try await output(frame)
        state.sent()
    }
}

extension ClientFrame {
    /// A masked binary WebSocket frame holding this frame's bytes.
    static func webSocketFrame(_ frame: ClientFrame) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: ByteBuffer(bytes: frame.serializedBytes()))
    }
}

extension Welcome {
    /// The heartbeat interval it names, at least a second.
    var heartbeatInterval: Duration { .milliseconds(Int64(max(heartbeatIntervalMs, 1000))) }
}

/// A session's frames handled where NIO reads them, for an `ImmediatePushStore`: each push is
/// stored and acknowledged in the read that brought it. It completes `ended` once, with why
/// the session ended.
private final class ImmediateSession: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// What the session's task waits on.
    struct Handle: Sendable {
        let channel: any Channel
        let ended: EventLoopFuture<PushClient.SessionEnd>
    }

    private var reception: PushReception
    private let store: any ImmediatePushStore
    private let state: SessionState
    private let ended: EventLoopPromise<PushClient.SessionEnd>
    private let emit: @Sendable (PushClient.Event) -> Void
    private var isOver = false
    /// What this read answers, as whole masked frames (`WebSocketFraming`), written past the
    /// WebSocket encoder in one buffer at the read's end: through the encoder each
    /// acknowledgement was a frame, a pipeline pass and a header buffer of its own.
    private var answers: ByteBuffer?
    /// The WebSocket encoder's context, which the answers are written from.
    private let encoder: ChannelHandlerContext

    init(
        reception: PushReception, store: any ImmediatePushStore, state: SessionState, ended: EventLoopPromise<PushClient.SessionEnd>,
        encoder: ChannelHandlerContext, emit: @escaping @Sendable (PushClient.Event) -> Void
    ) {
        self.reception = reception
        self.store = store
        self.state = state
        self.ended = ended
        self.encoder = encoder
        self.emit = emit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !isOver else { return }
        state.received()
        switch reception.react(to: unwrapInboundIn(data)) {
        case .pong(let pong):
            send(.pong, pong.data.readableBytesView, context: context)
        case .closed(let code, let reason):
            end(PushClient.end(closeCode: code, reason: reason, welcomed: state.welcomed), context: context)
        case .welcomed(let welcome):
            state.welcome(interval: welcome.heartbeatInterval)
            emit(.connected(welcome))
        case .store(let messages, let replies):
            if !messages.isEmpty { store.storeNow(messages) }
            for reply in replies { send(.binary, reply.serializedBytes(), context: context) }
        case .delivered(let receipt):
            store.deliveredNow(receipt)
        case .presence(let presence):
            store.presenceNow(presence)
        case .refused(let reason):
            end(.refused(reason), context: context)
        case .nothing:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        end(.ended(reason: "connection closed", wasWelcomed: state.welcomed), context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        end(.ended(reason: "\(error)", wasWelcomed: state.welcomed), context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The pipeline is going: nothing to close, but the session's task must not wait forever.
        finish(.ended(reason: "connection closed", wasWelcomed: state.welcomed))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let answers {
            self.answers = nil
            encoder.writeAndFlush(NIOAny(answers), promise: nil)
        }
        context.fireChannelReadComplete()
    }

    /// Acknowledgements are answers to what the server pushed, which its window per chat
    /// bounds. They go out in one buffer, one write and one flush per read
    /// (`channelReadComplete`).
    private func send(_ opcode: WebSocketOpcode, _ payload: some Collection<UInt8>, context: ChannelHandlerContext) {
        state.sent()
        if answers == nil { answers = context.channel.allocator.buffer(capacity: 256) }
        answers!.writeWholeMaskedWebSocketFrame(opcode: opcode, payload: payload)
    }

    private func end(_ end: PushClient.SessionEnd, context: ChannelHandlerContext) {
        guard finish(end) else { return }
        context.close(promise: nil)
    }

    /// Completes `ended` the first time; false once it was.
    @discardableResult
    private func finish(_ end: PushClient.SessionEnd) -> Bool {
        guard !isOver else { return false }
        isOver = true
        ended.succeed(end)
        return true
    }
}

extension PushClient {
    /// A TLS context for `wss://` that trusts the PEM authorities in `trustedCAFile` (nil: the
    /// system's). A server reached by IP address is checked for a certificate chained to those
    /// authorities, without a name (NIOSSL checks names only).
    public static func tlsContext(trustedCAFile: String?, byAddress: Bool) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let trustedCAFile { configuration.trustRoots = .file(trustedCAFile) }
        if byAddress { configuration.certificateVerification = .noHostnameVerification }
        return try NIOSSLContext(configuration: configuration)
    }
}
