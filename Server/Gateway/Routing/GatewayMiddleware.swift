import CoAP
import CourierCore
import Logging

/// A step every device request takes before its handler, in the router's order: it may fill
/// in the context or refuse the request by throwing (the router answers the error once).
protocol GatewayMiddleware: Sendable {
    func prepare(_ context: inout RequestContext) async throws
}

/// Names the device: by the DTLS association the request came through, or else by the first
/// Uri-Query option `t=TOKEN`, which must be a live token (else 4.01, with a short body: an
/// unauthenticated request never draws a large answer).
struct Authentication: GatewayMiddleware {
    let authenticator: TokenAuthenticator

    /// The device token of a request: the first Uri-Query option `t=TOKEN`.
    static func token(of message: CoAPMessage) -> String? {
        message.uriQuery.first { $0.hasPrefix("t=") }.map { String($0.dropFirst(2)) }
    }

    func prepare(_ context: inout RequestContext) async throws {
        // Over DTLS the association names the device, and a token in the request is not needed
        // (nor looked at: the handshake is the stronger proof).
        if let peer = context.request.peerIdentity {
            let identity: TokenIdentity?
            do {
                identity = try await authenticator.authenticate(peerIdentity: peer)
            } catch {
                throw Refusal.unavailable("credential check failed", cause: error)
            }
            guard let identity else { throw Refusal(.unauthorized, .unauthorized, "this DTLS identity names no device") }
            context.identity = identity
            return
        }
        guard let token = Self.token(of: context.message) else { throw Refusal(.unauthorized, .unauthorized, "no token") }
        let identity: TokenIdentity?
        do {
            identity = try await authenticator.authenticate(token)
        } catch {
            throw Refusal.unavailable("token check failed", cause: error)
        }
        guard let identity else { throw Refusal(.unauthorized, .unauthorized, "bad token") }
        context.identity = identity
    }
}

/// Turns a flooding device away (4.29 with Max-Age) before it costs a decode or a log append.
struct RateLimiting: GatewayMiddleware {
    let limiter: DeviceRateLimiter

    func prepare(_ context: inout RequestContext) async throws {
        if case .limited(let seconds) = limiter.take(try context.device().deviceID) {
            throw Refusal(.tooManyRequests, .rateLimited, "too many requests from this device", retryAfter: seconds)
        }
    }
}
