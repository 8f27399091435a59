import CoAP
import Logging
import ServiceLifecycle

/// The CoAP/UDP gateway as a long-running service: binds, serves until graceful shutdown, closes.
public struct GatewayService: Service {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var maxConcurrentRequests: Int
        public var endpoint: CoAPEndpoint.Configuration

        public init(host: String = "0.0.0.0", port: Int = 5683, maxConcurrentRequests: Int = 256, endpoint: CoAPEndpoint.Configuration = .init()) {
            self.host = host
            self.port = port
            self.maxConcurrentRequests = maxConcurrentRequests
            self.endpoint = endpoint
        }
    }

    let configuration: Configuration
    let resources: any CoAPRequestHandler
    let logger: Logger

    public init(configuration: Configuration, resources: any CoAPRequestHandler = GatewayResources(), logger: Logger) {
        self.configuration = configuration
        self.resources = resources
        self.logger = logger
    }

    public func run() async throws {
        let endpoint = try await CoAPEndpoint.bind(
            host: configuration.host, port: configuration.port, serving: true, configuration: configuration.endpoint
        )
        logger.info("CoAP gateway listening", metadata: ["address": "\(endpoint.localAddress)"])
        await cancelWhenGracefulShutdown {
            await endpoint.serve(maxConcurrentRequests: configuration.maxConcurrentRequests, resources)
        }
        await endpoint.close()
        logger.info("CoAP gateway stopped")
    }
}
