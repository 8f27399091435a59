import CoAP
import CourierCore
import Logging

/// The CoAP resources the gateway serves, as one router. Every path is versioned under `/v1`;
/// device routes pass authentication and the rate limit first.
public struct GatewayResources: CoAPRequestHandler {
    /// `/.well-known/core` (RFC 6690): what a generic CoAP client can discover here. Kept short:
    /// anyone may ask, so the answer must not be much larger than the question (amplification).
    static let linkFormat = "</v1/msg>,</v1/sync>"

    private let router: GatewayRouter

    /// Without `intake` only the health and discovery resources exist.
    public init(intake: MessageIntake? = nil, metrics: ServerMetrics? = nil, logger: Logger = Logger(label: "courier.gateway")) {
        var middleware: [any GatewayMiddleware] = []
        if let intake {
            middleware = [
                Authentication(authenticator: intake.authenticator),
                RateLimiting(limiter: DeviceRateLimiter(ratePerSecond: intake.limits.deviceRatePerSecond, burst: intake.limits.deviceBurst)),
            ]
        }
        var router = GatewayRouter(middleware: middleware, retryAfterSeconds: intake?.limits.retryAfterSeconds ?? 1, metrics: metrics, logger: intake?.logger ?? logger)
        if let intake {
            let sync = SyncResource(storage: intake.storage)
            let chats = ChatsResource(storage: intake.storage, chats: intake.chats)
            let reading = HistoryResource(storage: intake.storage)
            router.device(.post, "v1/msg", intake.send)
            router.device(.post, "v1/sync", sync.sync)
            router.device(.get, "v1/chats", chats.list)
            router.device(.post, "v1/chats", chats.create)
            router.device(.post, "v1/chats/join", chats.join)
            router.device(.post, "v1/chats/invite", chats.invite)
            router.device(.post, "v1/history", reading.history)
            router.device(.post, "v1/search", reading.search)
        }
        router.open(.get, "v1/health") { _ in .response(.content, payload: Array("ok".utf8), contentFormat: CoAPContentFormat.textPlain) }
        router.open(.get, ".well-known/core") { _ in .response(.content, payload: Array(Self.linkFormat.utf8), contentFormat: CoAPContentFormat.linkFormat) }
        self.router = router
    }

    public func handle(_ request: IncomingRequest) async -> CoAPMessage {
        await router.handle(request)
    }
}
