import CoAP
import CourierCore
import Logging

/// The CoAP resources the gateway serves, as one router. Every path is versioned under `/v1`;
/// device routes pass authentication and the rate limit first.
public struct GatewayResources: CoAPRequestHandler {
    /// `/.well-known/core` (RFC 6690): what a generic CoAP client can discover here. Kept short:
    /// anyone may ask, so the answer must not be much larger than the question (amplification).
    static let linkFormat = "</v1/msg>"

    /// What the gateway's middleware and error answers are set to.
    public struct Configuration: Sendable {
        /// Max-Age on a 5.03 that names none.
        public var retryAfterSeconds: UInt32 = 1
        /// Requests per second one device may make on average, and in a burst; beyond, 4.29.
        public var deviceRatePerSecond = 50.0
        public var deviceBurst = 100
        public init() {}
    }

    private let router: GatewayRouter

    /// Only the health and discovery resources (a gateway with no devices behind it).
    public init(configuration: Configuration = Configuration(), metrics: ServerMetrics? = nil, logger: Logger = Logger(label: "courier.gateway")) {
        self.init(devices: nil, configuration: configuration, metrics: metrics, logger: logger)
    }

    /// Every resource: devices are named by `authenticator`, and send through `intake`;
    /// `online` says which users have a live push session (member lists show it).
    public init(
        intake: any MessageSending, authenticator: TokenAuthenticator, configuration: Configuration = Configuration(),
        metrics: ServerMetrics? = nil, logger: Logger = Logger(label: "courier.gateway"), online: @escaping @Sendable ([UInt64]) async -> Set<UInt64> = { _ in [] }
    ) {
        self.init(devices: (intake, authenticator), configuration: configuration, metrics: metrics, logger: logger, online: online)
    }

    private init(
        devices: (intake: any MessageSending, authenticator: TokenAuthenticator)?, configuration: Configuration, metrics: ServerMetrics?, logger: Logger,
        online: @escaping @Sendable ([UInt64]) async -> Set<UInt64> = { _ in [] }
    ) {
        var router = GatewayRouter(
            middleware: devices.map { devices in
                [
                    Authentication(authenticator: devices.authenticator),
                    RateLimiting(limiter: DeviceRateLimiter(ratePerSecond: configuration.deviceRatePerSecond, burst: configuration.deviceBurst)),
                ]
            } ?? [],
            retryAfterSeconds: configuration.retryAfterSeconds, metrics: metrics, logger: logger
        )
        if let intake = devices?.intake {
            let sync = SyncResource(storage: intake.storage)
            let chats = ChatsResource(storage: intake.storage, chats: intake.chats, online: online)
            let reading = HistoryResource(storage: intake.storage)
            router.device(.post, "v1/msg") { try await intake.send($0) }
            router.device(.post, "v1/sync", sync.sync)
            router.device(.get, "v1/chats", chats.list)
            router.device(.post, "v1/chats", chats.create)
            router.device(.post, "v1/chats/join", chats.join)
            router.device(.post, "v1/chats/invite", chats.invite)
            router.device(.post, "v1/chats/members", chats.members)
            router.device(.post, "v1/chats/leave", chats.leave)
            router.device(.post, "v1/history", reading.history)
            router.device(.post, "v1/search", reading.search)
            router.open(.post, "v1/login", showsCredential: true, LoginResource(storage: intake.storage).login)
        }
        router.open(.get, "v1/health") { _ in .response(.content, payload: Array("ok".utf8), contentFormat: CoAPContentFormat.textPlain) }
        router.open(.get, ".well-known/core") { _ in .response(.content, payload: Array(Self.linkFormat.utf8), contentFormat: CoAPContentFormat.linkFormat) }
        self.router = router
    }

    public func handle(_ request: IncomingRequest) async -> CoAPMessage {
        await router.handle(request)
    }
}
