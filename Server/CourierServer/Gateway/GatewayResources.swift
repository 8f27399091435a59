import CoAP

/// The CoAP resources the gateway serves. Every path is versioned under `/v1`.
public struct GatewayResources: CoAPRequestHandler {
    /// `/.well-known/core` (RFC 6690): what a generic CoAP client can discover here.
    static let linkFormat = "</v1/health>;rt=\"courier.health\";ct=0"

    public init() {}

    public func handle(_ request: IncomingRequest) async -> CoAPMessage {
        switch (request.message.code, request.message.uriPath) {
        case (.get, ["v1", "health"]):
            return .response(.content, payload: Array("ok".utf8), contentFormat: CoAPContentFormat.textPlain)
        case (.get, [".well-known", "core"]):
            return .response(.content, payload: Array(Self.linkFormat.utf8), contentFormat: CoAPContentFormat.linkFormat)
        case (_, ["v1", "health"]), (_, [".well-known", "core"]):
            return .response(.methodNotAllowed, payload: Array("only GET is allowed here".utf8))
        default:
            return .response(.notFound, payload: Array("no resource at /\(request.message.uriPath.joined(separator: "/"))".utf8))
        }
    }
}
