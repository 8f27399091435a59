import CoAP
import CourierCore
import Logging

/// The gateway's CoAP resources: each route is a method and a path with its handler. Device
/// routes run the middleware first (authentication, rate limit), in order; open routes (health,
/// discovery) run none. Whatever a middleware or handler throws is answered here, once, as its
/// CoAP code and Error body (`Refusal.from`).
struct GatewayRouter: CoAPRequestHandler {
    typealias Handler = @Sendable (RequestContext) async throws -> CoAPMessage

    private struct Route: Sendable {
        var needsDevice: Bool
        var handler: Handler
    }

    /// Path -> method -> route.
    private var routes: [[String]: [CoAPCode: Route]] = [:]
    private let middleware: [any GatewayMiddleware]
    /// Max-Age of a 5.03 that names none.
    private let retryAfterSeconds: UInt32
    private let metrics: ServerMetrics?
    private let logger: Logger

    init(middleware: [any GatewayMiddleware], retryAfterSeconds: UInt32 = 1, metrics: ServerMetrics? = nil, logger: Logger) {
        self.middleware = middleware
        self.retryAfterSeconds = retryAfterSeconds
        self.metrics = metrics
        self.logger = logger
    }

    /// A route for devices: its handler sees the context after every middleware.
    mutating func device(_ method: CoAPCode, _ path: String, _ handler: @escaping Handler) {
        add(method, path, Route(needsDevice: true, handler: handler))
    }

    /// A route anyone may ask: no middleware.
    mutating func open(_ method: CoAPCode, _ path: String, _ handler: @escaping Handler) {
        add(method, path, Route(needsDevice: false, handler: handler))
    }

    private mutating func add(_ method: CoAPCode, _ path: String, _ route: Route) {
        routes[path.split(separator: "/").map(String.init), default: [:]][method] = route
    }

    func handle(_ request: IncomingRequest) async -> CoAPMessage {
        let response = await answer(request)
        metrics?.countRequest(code: "\(response.code)")
        return response
    }

    private func answer(_ request: IncomingRequest) async -> CoAPMessage {
        // No diagnostic text on these two: the code says it, and an unauthenticated request
        // must not draw a response much larger than itself.
        guard let methods = routes[request.message.uriPath] else { return .response(.notFound) }
        guard let route = methods[request.message.code] else { return .response(.methodNotAllowed) }
        var context = RequestContext(request: request)
        do {
            if route.needsDevice {
                for step in middleware { try await step.prepare(&context) }
            }
            return try await route.handler(context)
        } catch {
            return refusal(error, context).response
        }
    }

    /// The one place an error becomes an answer; what the device cannot act on is logged.
    private func refusal(_ error: any Error, _ context: RequestContext) -> Refusal {
        var refusal = Refusal.from(error)
        if refusal.code == .serviceUnavailable && refusal.retryAfter == 0 { refusal.retryAfter = retryAfterSeconds }
        if let cause = refusal.cause {
            var metadata: Logger.Metadata = ["path": "\(context.message.uriPath.joined(separator: "/"))", "error": "\(cause)"]
            if let identity = context.identity { metadata["device"] = "\(identity.deviceID)" }
            if refusal.code == .serviceUnavailable && refusal.wireCode == .overloaded {
                logger.warning("request failed; the device retries", metadata: metadata)
            } else {
                logger.error("request failed", metadata: metadata)
            }
        }
        return refusal
    }
}
