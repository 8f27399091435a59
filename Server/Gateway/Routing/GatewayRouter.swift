import CoAP
import CourierCore
import CourierProtocol
import Logging

/// The gateway's CoAP resources: each route is a method and a path with its handler. Device
/// routes run the middleware first (authentication, rate limit), in order; open routes (health,
/// discovery) run none. Whatever a middleware or handler throws is answered here, once, as its
/// CoAP code and Error body (`Refusal.from`).
struct GatewayRouter: CoAPRequestHandler {
    typealias Handler = @Sendable (RequestContext) async throws -> CoAPMessage

    private struct Route: Sendable {
        var needsDevice: Bool
        /// An open route whose success needs a credential of its own (an invite code): its
        /// 2.xx answers go as they are.
        var showsCredential = false
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

    /// A route anyone may ask: no middleware. `showsCredential`: it succeeds only for a
    /// credential in the request itself, so its successes are not cut to the request's size.
    mutating func open(_ method: CoAPCode, _ path: String, showsCredential: Bool = false, _ handler: @escaping Handler) {
        add(method, path, Route(needsDevice: false, showsCredential: showsCredential, handler: handler))
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
        // must not draw a response larger than itself.
        guard let methods = routes[request.message.uriPath] else { return .response(.notFound) }
        guard let route = methods[request.message.code] else { return .response(.methodNotAllowed) }
        var context = RequestContext(request: request)
        let response: CoAPMessage
        do {
            if route.needsDevice {
                for step in middleware { try await step.prepare(&context) }
            }
            response = try await route.handler(context)
        } catch {
            response = refusal(error, context).response
        }
        // An endpoint that showed no credential gets no more bytes than it sent (a spoofed
        // source must not turn the server into an amplifier): an Error body goes without its
        // text first, then whole.
        if context.identity != nil || (route.showsCredential && response.code.isSuccess) { return response }
        return Self.within(request.message, response)
    }

    /// `response` cut to the size of `request`: the Error body's text dropped, then the whole
    /// body (never a part of one: a cut Protobuf body decodes as nothing, or as something else).
    static func within(_ request: CoAPMessage, _ response: CoAPMessage) -> CoAPMessage {
        let limit = request.encode().count
        var answer = response
        answer.token = request.token
        guard answer.encode().count > limit else { return response }
        if let error = try? WireError(serializedBytes: response.payload), !error.message.isEmpty {
            var terse = error
            terse.message = ""
            answer.payload = terse.serializedBytes()
            if answer.encode().count <= limit {
                answer.token = response.token
                return answer
            }
        }
        var bare = response
        bare.payload = []
        bare.removeOption(.contentFormat)
        return bare.fitting(within: limit, token: request.token)
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
