import CourierCore
import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// The operations listener: `GET /health` (the process runs), `GET /ready` (the gateway takes
/// messages), `GET /metrics` (Prometheus text format) and, with an `AdminAPI`,
/// `POST /admin/v1/provision`.
public final class OpsHTTPService: Service, Sendable {
    let host: String
    let port: Int
    let metrics: ServerMetrics
    let isReady: @Sendable () async -> Bool
    let logger: Logger
    let admin: AdminAPI?
    let maxConnections: Int
    let idleTimeout: Duration
    private let boundPort = NIOLockedValueBox<Int?>(nil)

    /// Connections open at once, about (Hummingbird checks before each accept, and NIO may
    /// accept a few in one read): each is a task on the listener's thread. Past it a new one
    /// waits in the kernel's accept queue (256) until one closes; beyond that queue Linux drops
    /// the handshake and the client retries until its own timeout. Scrapers, probes and
    /// provisioning open a few.
    public static let defaultMaxConnections = 64
    /// A connection with no request for this long is closed, so idle keep-alive connections
    /// (a scraper's pool, a half-sent request) cannot hold every place and lock probes out.
    public static let defaultIdleTimeout: Duration = .seconds(30)

    public init(
        host: String, port: Int, metrics: ServerMetrics, admin: AdminAPI? = nil, maxConnections: Int = OpsHTTPService.defaultMaxConnections,
        idleTimeout: Duration = OpsHTTPService.defaultIdleTimeout, logger: Logger, isReady: @escaping @Sendable () async -> Bool
    ) {
        self.host = host
        self.admin = admin
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
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
                body: ResponseBody(byteBuffer: ByteBuffer(string: await metrics.scrape()))
            )
        }
        if let admin {
            router.post("admin/v1/provision") { request, _ -> Response in
                do {
                    try admin.authorize(request.headers[.authorization])
                    let body: ByteBuffer
                    do {
                        body = try await request.body.collect(upTo: ProvisionRequest.maxBodyBytes)
                    } catch is NIOTooManyBytesError {
                        throw AdminRefusal.badRequest("the body is larger than \(ProvisionRequest.maxBodyBytes / 1024) KiB")
                    }
                    return Self.json(.ok, ByteBuffer(bytes: try await admin.provision(body: Array(buffer: body))))
                } catch let refusal as AdminRefusal {
                    return Self.json(Self.status(of: refusal), ByteBuffer(bytes: try JSONEncoder().encode(["error": refusal.message])))
                }
            }
        }
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: TimeAmount(idleTimeout))),
            configuration: .init(
                address: .hostname(host, port: port), serverName: "courier-server",
                availableConnectionsDelegate: .maximum(maxConnections, logger: logger)
            ),
            onServerRunning: { [boundPort, logger] channel in
                boundPort.withLockedValue { $0 = channel.localAddress?.port }
                logger.info("ops HTTP listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            logger: logger
        )
        // Hummingbird's date cache ends its timer with AsyncAlgorithms' `merge`, whose lock is
        // held across a continuation; Swift 6.0-6.3 may re-enqueue the task before the
        // continuation's closure runs (swiftlang/swift#85668, apple/swift-async-algorithms#430).
        // On the NIO event loops, which run every task here (`ServerMain`), that job went
        // behind the merge's other input on the same loop, which then waited for the lock
        // forever: the server hung at SIGTERM (once in about 14 stops after load). On a thread
        // of its own the job that releases the lock is not queued behind an event loop that
        // waits for it. This narrows the fault, not ends it: a wait for that lock on this
        // thread itself (the merge's cancellation handler) could still hang it; the end is
        // async-algorithms' fix (PR #444) once released.
        try await withTaskExecutorPreference(DedicatedThreadExecutor(name: "courier-ops")) {
            try await app.run()
        }
    }

    private static func json(_ status: HTTPResponse.Status, _ body: ByteBuffer) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: body))
    }

    private static func status(of refusal: AdminRefusal) -> HTTPResponse.Status {
        switch refusal {
        case .unauthorized: .unauthorized
        case .badRequest: .badRequest
        case .unavailable: .serviceUnavailable
        case .failed: .internalServerError
        }
    }
}
