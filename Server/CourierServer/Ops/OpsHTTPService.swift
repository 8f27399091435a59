import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// The operations listener: `GET /health` (the process runs), `GET /ready` (the gateway takes
/// messages) and `GET /metrics` (Prometheus text format).
public final class OpsHTTPService: Service, Sendable {
    let host: String
    let port: Int
    let metrics: ServerMetrics
    let isReady: @Sendable () async -> Bool
    let logger: Logger
    private let boundPort = NIOLockedValueBox<Int?>(nil)

    public init(host: String, port: Int, metrics: ServerMetrics, logger: Logger, isReady: @escaping @Sendable () async -> Bool) {
        self.host = host
        self.port = port
        self.metrics = metrics
        self.logger = logger
        self.isReady = isReady
    }

    /// The TCP port once listening (useful with port 0).
    public var listeningPort: Int? { boundPort.withLockedValue { $0 } }

    public func run() async throws {
        let router = Router()
        router.get("health") { _, _ in "ok\n" }
        router.get("ready") { [isReady] _, _ -> Response in
            let ready = await isReady()
            return Response(
                status: ready ? .ok : .serviceUnavailable,
                headers: [.contentType: "text/plain"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: ready ? "ready\n" : "not ready\n"))
            )
        }
        router.get("metrics") { [metrics] _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.exposition()))
            )
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "courier-server"),
            onServerRunning: { [boundPort, logger] channel in
                boundPort.withLockedValue { $0 = channel.localAddress?.port }
                logger.info("ops HTTP listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            logger: logger
        )
        try await app.run()
    }
}
