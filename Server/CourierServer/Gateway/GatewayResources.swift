import CoAP

/// The CoAP resources the gateway serves. Every path is versioned under `/v1`.
public struct GatewayResources: CoAPRequestHandler {
    /// `/.well-known/core` (RFC 6690): what a generic CoAP client can discover here. Kept short:
    /// anyone may ask, so the answer must not be much larger than the question (amplification).
    static let linkFormat = "</v1/msg>,</v1/sync>"

    let intake: MessageIntake?
    let sync: SyncResource?
    let metrics: ServerMetrics?

    /// Without `intake` only the health and discovery resources exist.
    public init(intake: MessageIntake? = nil, metrics: ServerMetrics? = nil) {
        self.intake = intake
        self.sync = intake.map { SyncResource(intake: $0, storage: $0.storage, logger: $0.logger) }
        self.metrics = metrics
    }

    public func handle(_ request: IncomingRequest) async -> CoAPMessage {
        let response = await route(request)
        metrics?.countRequest(code: "\(response.code)")
        return response
    }

    private func route(_ request: IncomingRequest) async -> CoAPMessage {
        switch (request.message.code, request.message.uriPath) {
        case (.post, ["v1", "msg"]) where intake != nil:
            return await intake!.send(request)
        case (.post, ["v1", "sync"]) where sync != nil:
            return await sync!.sync(request)
        case (_, ["v1", "msg"]) where intake != nil, (_, ["v1", "sync"]) where intake != nil:
            return .response(.methodNotAllowed)
        case (.get, ["v1", "health"]):
            return .response(.content, payload: Array("ok".utf8), contentFormat: CoAPContentFormat.textPlain)
        case (.get, [".well-known", "core"]):
            return .response(.content, payload: Array(Self.linkFormat.utf8), contentFormat: CoAPContentFormat.linkFormat)
        case (_, ["v1", "health"]), (_, [".well-known", "core"]):
            return .response(.methodNotAllowed)
        default:
            // No diagnostic text: the code says it, and an unauthenticated request must not
            // draw a response much larger than itself.
            return .response(.notFound)
        }
    }
}
