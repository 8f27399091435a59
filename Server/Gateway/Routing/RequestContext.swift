import CoAP
import CourierCore
import CourierProtocol

/// What a gateway handler works from: the request, and the device its token names once the
/// authentication middleware has run (device routes only reach their handler with one).
public struct RequestContext: Sendable {
    let request: IncomingRequest
    /// Set by `Authentication`.
    var identity: TokenIdentity?

    var message: CoAPMessage { request.message }

    /// The device the request speaks for; a 4.01 if no middleware has named one.
    func device() throws(Refusal) -> TokenIdentity {
        guard let identity else { throw Refusal(.unauthorized, .unauthorized, "no token") }
        return identity
    }

    /// The body decoded as `Body`; a 4.00 naming what is wrong otherwise.
    func body<Body: WireMessage>(_: Body.Type) throws(Refusal) -> Body {
        do {
            return try Body(serializedBytes: request.message.payload)
        } catch {
            throw Refusal(.badRequest, .badRequest, "\(error)")
        }
    }
}
