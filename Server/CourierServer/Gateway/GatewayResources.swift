import CoAP

/// The CoAP resources the gateway serves. Every path is versioned under `/v1`.
public struct GatewayResources: CoAPRequestHandler {
    /// `/.well-known/core` (RFC 6690): what a generic CoAP client can discover here. Kept short:
    /// anyone may ask, so the answer must not be much larger than the question (amplification).
    static let linkFormat = "</v1/msg>,</v1/sync>"

    /// What a device reaches with its token.
    private struct DeviceResources: Sendable {
        let intake: MessageIntake
        let sync: SyncResource
        let chats: ChatsResource
        let reading: HistoryResource

        init(intake: MessageIntake) {
            self.intake = intake
            sync = SyncResource(intake: intake, storage: intake.storage, logger: intake.logger)
            let calls = ClientCalls(intake: intake)
            chats = ChatsResource(calls: calls, chats: intake.chats)
            reading = HistoryResource(calls: calls)
        }

        /// The answer, or nil when the path is not one of these.
        func route(_ request: IncomingRequest) async -> CoAPMessage? {
            switch (request.message.code, request.message.uriPath) {
            case (.post, ["v1", "msg"]): await intake.send(request)
            case (.post, ["v1", "sync"]): await sync.sync(request)
            case (.get, ["v1", "chats"]): await chats.list(request)
            case (.post, ["v1", "chats"]): await chats.create(request)
            case (.post, ["v1", "chats", "join"]): await chats.join(request)
            case (.post, ["v1", "chats", "invite"]): await chats.invite(request)
            case (.post, ["v1", "history"]): await reading.history(request)
            case (.post, ["v1", "search"]): await reading.search(request)
            case (_, ["v1", "msg"]), (_, ["v1", "sync"]), (_, ["v1", "chats"]), (_, ["v1", "chats", "join"]),
                 (_, ["v1", "chats", "invite"]), (_, ["v1", "history"]), (_, ["v1", "search"]):
                .response(.methodNotAllowed)
            default: nil
            }
        }
    }

    private let device: DeviceResources?
    let metrics: ServerMetrics?

    /// Without `intake` only the health and discovery resources exist.
    public init(intake: MessageIntake? = nil, metrics: ServerMetrics? = nil) {
        self.device = intake.map(DeviceResources.init)
        self.metrics = metrics
    }

    public func handle(_ request: IncomingRequest) async -> CoAPMessage {
        let response = await route(request)
        metrics?.countRequest(code: "\(response.code)")
        return response
    }

    private func route(_ request: IncomingRequest) async -> CoAPMessage {
        if let device, let response = await device.route(request) { return response }
        switch (request.message.code, request.message.uriPath) {
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
