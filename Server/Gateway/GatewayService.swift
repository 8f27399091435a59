import CoAP
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// The CoAP/UDP gateway as a long-running service: binds its sockets, serves until graceful
/// shutdown (letting in-flight appends finish and be answered), then closes.
///
/// It uses more than one core with several sockets on one port (SO_REUSEPORT), each on its own
/// event loop: the kernel spreads peers over them by address, so one peer always meets the
/// same socket and its duplicate detection.
public final class GatewayService: Service, Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Sockets sharing the port; 1 disables SO_REUSEPORT.
        public var channels: Int
        public var maxConcurrentRequests: Int
        public var endpoint: CoAPEndpoint.Configuration
        /// CoAP over DTLS (`coaps://`): its port and its security layer, on as many sockets as
        /// the clear-text port has; nil serves clear text only.
        public var secure: (port: Int, security: any DatagramSecurity)?
        /// Whether the clear-text port is opened (not with `requireSecure`).
        public var clearText = true

        public init(host: String = "0.0.0.0", port: Int = 5683, channels: Int = 1, maxConcurrentRequests: Int = 256, endpoint: CoAPEndpoint.Configuration = .init()) {
            self.host = host
            self.port = port
            self.channels = channels
            self.maxConcurrentRequests = maxConcurrentRequests
            self.endpoint = endpoint
        }
    }

    let configuration: Configuration
    let resources: any CoAPRequestHandler
    let logger: Logger
    /// Runs before binding (the server waits here until its consumers have caught up).
    let beforeBinding: @Sendable () async -> Void
    private let boundPort = NIOLockedValueBox<Int?>(nil)
    private let boundSecurePort = NIOLockedValueBox<Int?>(nil)
    private let serving = NIOLockedValueBox<[CoAPEndpoint]>([])

    public init(configuration: Configuration, resources: any CoAPRequestHandler = GatewayResources(), logger: Logger, beforeBinding: @escaping @Sendable () async -> Void = {}) {
        self.configuration = configuration
        self.resources = resources
        self.logger = logger
        self.beforeBinding = beforeBinding
    }

    /// The clear-text UDP port once bound (useful with port 0); nil before, or when not opened.
    public var port: Int? { boundPort.withLockedValue { $0 } }
    /// Whether the gateway has bound its sockets and serves.
    public var isListening: Bool { port != nil || securePort != nil }
    /// The DTLS UDP port once bound; nil before, or without DTLS.
    public var securePort: Int? { boundSecurePort.withLockedValue { $0 } }

    /// Entries in the deduplication caches of all the gateway's sockets (bounded per socket by
    /// `configuration.endpoint.transmission.deduplicationCapacity`); 0 when not serving.
    public func dedupEntries() async -> Int {
        var total = 0
        for endpoint in serving.withLockedValue({ $0 }) { total += await endpoint.rememberedMessages() }
        return total
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.beforeBinding() }
        if Task.isCancelled || Task.isShuttingDownGracefully { return }
        var endpoints: [CoAPEndpoint] = []
        var clearEndpoints: [CoAPEndpoint] = []
        var secureEndpoints: [CoAPEndpoint] = []
        do {
            if configuration.clearText {
                clearEndpoints = try await bindSockets(port: configuration.port, configuration.endpoint, into: &endpoints)
            }
            if let secure = configuration.secure {
                var endpoint = configuration.endpoint
                endpoint.security = secure.security
                secureEndpoints = try await bindSockets(port: secure.port, endpoint, into: &endpoints)
            }
        } catch {
            for endpoint in endpoints { await endpoint.close() }
            throw error
        }
        let serving = endpoints
        boundPort.withLockedValue { $0 = clearEndpoints.first?.localAddress.port }
        boundSecurePort.withLockedValue { $0 = secureEndpoints.first?.localAddress.port }
        self.serving.withLockedValue { $0 = serving }
        logger.info("CoAP gateway listening", metadata: [
            "clear": "\(clearEndpoints.first.map { "\($0.localAddress)" } ?? "off")", "dtls": "\(secureEndpoints.first.map { "\($0.localAddress)" } ?? "off")",
            "sockets": "\(endpoints.count)",
        ])
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                for endpoint in serving {
                    group.addTask { await endpoint.serve(maxConcurrentRequests: self.configuration.maxConcurrentRequests, self.resources) }
                }
            }
        }
        self.serving.withLockedValue { $0 = [] }
        for endpoint in endpoints { await endpoint.close() }
        boundPort.withLockedValue { $0 = nil }
        boundSecurePort.withLockedValue { $0 = nil }
        logger.info("CoAP gateway stopped")
    }

    /// `configuration.channels` sockets on one port (SO_REUSEPORT when more than one), each
    /// appended to `all` as soon as it is bound (so a failure closes what was bound).
    private func bindSockets(port: Int, _ endpoint: CoAPEndpoint.Configuration, into all: inout [CoAPEndpoint]) async throws -> [CoAPEndpoint] {
        let reusePort = configuration.channels > 1
        let first = try await CoAPEndpoint.bind(host: configuration.host, port: port, serving: true, configuration: endpoint, reusePort: reusePort)
        all.append(first)
        var bound = [first]
        let boundPort = first.localAddress.port ?? port
        for _ in 1..<configuration.channels {
            let next = try await CoAPEndpoint.bind(host: configuration.host, port: boundPort, serving: true, configuration: endpoint, reusePort: true)
            all.append(next)
            bound.append(next)
        }
        return bound
    }
}
