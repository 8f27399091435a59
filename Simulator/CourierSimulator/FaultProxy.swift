import CoAP
import NIOCore
import NIOPosix

/// A UDP relay between devices and a server that drops, duplicates, reorders, delays and
/// partitions datagrams both ways as a `FaultProxyPlan` says. Each device address gets its own
/// upstream socket, so the server sees one endpoint per device, as it would without the proxy.
///
/// Bounded: at most `maxClients` device mappings; one idle for `idleTimeout` is closed. At the
/// bound, datagrams from a new device are dropped (counted in `clientsRefused`) until an idle
/// mapping expires. A device whose mapping expired gets a new upstream port on its next datagram.
/// What waits is bounded too: datagrams delayed (`maxDelayed`), held for late duplicates
/// (`FaultProxyPlan.maxLateDuplicates`), one held for reordering per direction, and those
/// queued while a new device's socket binds (`maxPendingPerClient`).
public final class FaultProxy: Sendable {
    public struct Configuration: Sendable {
        public var listenHost: String
        public var listenPort: Int
        public var upstream: SocketAddress
        public var plan: FaultProxyPlan
        public var maxClients = 4_096
        public var idleTimeout: Duration = .seconds(300)
        /// Datagrams waiting while a new device's upstream socket binds; more are dropped.
        public var maxPendingPerClient = 64
        /// Datagrams waiting out their delay; past it, one goes at once (counted in
        /// `delaysSkipped`) rather than the proxy growing without bound.
        public var maxDelayed = 100_000

        public init(listenHost: String, listenPort: Int, upstream: SocketAddress, plan: FaultProxyPlan) {
            self.listenHost = listenHost
            self.listenPort = listenPort
            self.upstream = upstream
            self.plan = plan
        }
    }

    /// Counters of the whole proxy, for the end-of-run summary and `--stats-json`.
    public struct Report: Sendable, Codable {
        public var seed: UInt64
        public var upstream: FaultProxyCounters
        public var downstream: FaultProxyCounters
        public var total: FaultProxyCounters
        /// Device mappings made, open now, refused at the bound, and closed when idle.
        public var clients: Int
        public var openClients: Int
        public var clientsRefused: Int
        public var clientsExpired: Int
        /// Datagrams lost inside the proxy: a socket write failed, or too many waited for a bind.
        public var sendFailures: Int
        /// Datagrams sent without their delay because `maxDelayed` were already waiting.
        public var delaysSkipped: Int
    }

    public let localAddress: SocketAddress
    private let relay: Relay

    private init(localAddress: SocketAddress, relay: Relay) {
        self.localAddress = localAddress
        self.relay = relay
    }

    /// Binds the listening socket and starts relaying.
    public static func start(_ configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> FaultProxy {
        // One event loop for the listener, every upstream socket and the state machine, so the
        // machine needs no lock and sees arrivals in one order.
        let loop = group.next()
        let relay = Relay(configuration: configuration, loop: loop)
        let front = try await DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FrontHandler(relay: relay))
                }
            }
            .bind(host: configuration.listenHost, port: configuration.listenPort).get()
        try await loop.submit { relay.started(front: front) }.get()
        return FaultProxy(localAddress: front.localAddress!, relay: relay)
    }

    public func report() async -> Report {
        let relay = self.relay
        return (try? await relay.loop.submit { relay.report() }.get()) ?? relay.emptyReport
    }

    /// Closes every socket; what is still held or delayed is not sent.
    public func stop() async {
        let relay = self.relay
        let channels = (try? await relay.loop.submit { relay.stop() }.get()) ?? []
        for channel in channels { try? await channel.close() }
    }

    private final class FrontHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let relay: Relay
        init(relay: Relay) { self.relay = relay }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            relay.fromClient(envelope.remoteAddress, envelope.data)
        }
    }

    private final class UpstreamHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let relay: Relay
        let client: SocketAddress
        init(relay: Relay, client: SocketAddress) {
            self.relay = relay
            self.client = client
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            relay.fromServer(client, unwrapInboundIn(data).data)
        }
    }

    /// The relay's state, touched only on `loop`.
    private final class Relay: @unchecked Sendable {
        // @unchecked: every method runs on `loop` (asserted), the one thread that owns the state.
        private struct Mapping {
            var channel: (any Channel)?
            var pending: [ByteBuffer] = []
            var lastActive: Duration
        }

        let loop: any EventLoop
        private let configuration: Configuration
        private let startedAt = NIODeadline.now()
        private var machine: FaultProxyState<SocketAddress, ByteBuffer>
        private var front: (any Channel)?
        private var mappings: [SocketAddress: Mapping] = [:]
        private var ticker: RepeatedTask?
        private var lastExpiry: Duration = .zero
        private var clients = 0
        private var clientsRefused = 0
        private var clientsExpired = 0
        private var sendFailures = 0
        private var delayed = 0
        private var delaysSkipped = 0
        private var stopped = false

        init(configuration: Configuration, loop: any EventLoop) {
            self.configuration = configuration
            self.loop = loop
            machine = FaultProxyState(plan: configuration.plan)
        }

        var emptyReport: Report {
            Report(seed: configuration.plan.seed, upstream: .init(), downstream: .init(), total: .init(), clients: 0, openClients: 0, clientsRefused: 0, clientsExpired: 0, sendFailures: 0, delaysSkipped: 0)
        }

        private var now: Duration {
            .nanoseconds((NIODeadline.now() - startedAt).nanoseconds)
        }

        func started(front: any Channel) {
            loop.preconditionInEventLoop()
            self.front = front
            // Held datagrams fall due between arrivals; 10 ms is finer than any hold or delay
            // a test asks for, and cheap.
            ticker = loop.scheduleRepeatedTask(initialDelay: .milliseconds(10), delay: .milliseconds(10)) { [self] _ in
                tick()
            }
        }

        func stop() -> [any Channel] {
            loop.preconditionInEventLoop()
            stopped = true
            ticker?.cancel()
            let channels = [front].compactMap { $0 } + mappings.values.compactMap(\.channel)
            mappings = [:]
            front = nil
            return channels
        }

        func report() -> Report {
            loop.preconditionInEventLoop()
            return Report(
                seed: configuration.plan.seed, upstream: machine.counters(.upstream), downstream: machine.counters(.downstream),
                total: machine.totals, clients: clients, openClients: mappings.count, clientsRefused: clientsRefused,
                clientsExpired: clientsExpired, sendFailures: sendFailures, delaysSkipped: delaysSkipped
            )
        }

        func fromClient(_ client: SocketAddress, _ payload: ByteBuffer) {
            loop.preconditionInEventLoop()
            let now = self.now
            guard !stopped, ensureMapping(client, now: now) else { return }
            carryOut(machine.received(payload, flow: client, direction: .upstream, now: now))
        }

        func fromServer(_ client: SocketAddress, _ payload: ByteBuffer) {
            loop.preconditionInEventLoop()
            guard !stopped else { return }
            let now = self.now
            mappings[client]?.lastActive = now
            carryOut(machine.received(payload, flow: client, direction: .downstream, now: now))
        }

        private func tick() {
            guard !stopped else { return }
            let now = self.now
            if let due = machine.nextDue, due <= now { carryOut(machine.due(now: now)) }
            // Once a second is enough for a timeout of seconds, and spares a scan of every
            // mapping each tick.
            if now - lastExpiry >= .seconds(1) {
                lastExpiry = now
                expireIdle(now: now)
            }
        }

        private func carryOut(_ emissions: [FaultProxyState<SocketAddress, ByteBuffer>.Emission]) {
            for emission in emissions {
                if emission.delay <= .zero {
                    send(emission)
                } else if delayed >= configuration.maxDelayed {
                    delaysSkipped += 1
                    send(emission)
                } else {
                    delayed += 1
                    let nanoseconds = emission.delay.components.seconds * 1_000_000_000 + emission.delay.components.attoseconds / 1_000_000_000
                    loop.scheduleTask(in: .nanoseconds(nanoseconds)) { [self] in
                        delayed -= 1
                        send(emission)
                    }
                }
            }
        }

        private func send(_ emission: FaultProxyState<SocketAddress, ByteBuffer>.Emission) {
            guard !stopped else { return }
            switch emission.direction {
            case .downstream:
                guard let front else { return }
                write(front, AddressedEnvelope(remoteAddress: emission.flow, data: emission.payload))
            case .upstream:
                // A late duplicate may outlive its device's mapping; it gets a new one.
                guard ensureMapping(emission.flow, now: now) else { return }
                if let channel = mappings[emission.flow]?.channel {
                    write(channel, AddressedEnvelope(remoteAddress: configuration.upstream, data: emission.payload))
                } else if mappings[emission.flow]!.pending.count < configuration.maxPendingPerClient {
                    mappings[emission.flow]!.pending.append(emission.payload)
                } else {
                    sendFailures += 1
                }
            }
        }

        private func write(_ channel: any Channel, _ envelope: AddressedEnvelope<ByteBuffer>) {
            channel.writeAndFlush(envelope).whenFailure { [self] _ in sendFailures += 1 }
        }

        /// Makes sure `client` has a mapping (binding its upstream socket); false at the bound.
        private func ensureMapping(_ client: SocketAddress, now: Duration) -> Bool {
            if mappings[client] != nil {
                mappings[client]!.lastActive = now
                return true
            }
            if mappings.count >= configuration.maxClients { expireIdle(now: now) }
            guard mappings.count < configuration.maxClients else {
                clientsRefused += 1
                return false
            }
            clients += 1
            mappings[client] = Mapping(lastActive: now)
            let host = configuration.upstream.protocol == .inet6 ? "::" : "0.0.0.0"
            DatagramBootstrap(group: loop)
                .channelOption(.socketOption(.so_rcvbuf), value: 256 << 10)
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(UpstreamHandler(relay: self, client: client))
                    }
                }
                .bind(host: host, port: 0)
                .whenComplete { [self] result in bound(client, result) }
            return true
        }

        private func bound(_ client: SocketAddress, _ result: Result<any Channel, any Error>) {
            guard case .success(let channel) = result, !stopped, mappings[client] != nil, mappings[client]!.channel == nil else {
                if case .success(let channel) = result { channel.close(promise: nil) }
                if let lost = mappings.removeValue(forKey: client) { sendFailures += lost.pending.count }
                return
            }
            mappings[client]!.channel = channel
            let pending = mappings[client]!.pending
            mappings[client]!.pending = []
            for payload in pending { write(channel, AddressedEnvelope(remoteAddress: configuration.upstream, data: payload)) }
        }

        private func expireIdle(now: Duration) {
            for (client, mapping) in mappings where mapping.channel != nil && now - mapping.lastActive > configuration.idleTimeout {
                mappings[client] = nil
                clientsExpired += 1
                mapping.channel?.close(promise: nil)
            }
        }
    }
}
