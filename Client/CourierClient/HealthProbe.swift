import CoAP
import NIOCore

/// Asks a server's gateway whether it is up: `GET /v1/health` over CoAP.
public enum HealthProbe {
    public struct Answer: Sendable {
        public var code: CoAPCode
        public var body: String
        public var roundTrip: Duration
    }

    /// One probe from `endpoint`; throws the CoAP layer's error when the server does not answer.
    public static func probe(_ server: SocketAddress, from endpoint: CoAPEndpoint) async throws(CoAPClientError) -> Answer {
        let clock = ContinuousClock()
        let start = clock.now
        let response = try await endpoint.request(.request(.get, path: "/v1/health"), to: server)
        return Answer(code: response.code, body: String(decoding: response.payload, as: UTF8.self), roundTrip: clock.now - start)
    }
}
