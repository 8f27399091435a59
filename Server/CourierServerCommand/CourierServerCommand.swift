import ArgumentParser
import CourierServer
import Logging
import ServiceLifecycle

@main
struct CourierServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "courier-server",
        abstract: "Courier's server: a CoAP/UDP gateway for devices.",
        subcommands: [Serve.self, BenchLog.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server until SIGINT or SIGTERM.")

    @Option(help: "Address the CoAP gateway binds to.")
    var bind = "0.0.0.0"

    @Option(help: "UDP port of the CoAP gateway.")
    var coapPort = 5683

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard (0...65_535).contains(coapPort) else { throw ValidationError("--coap-port must be 0-65535") }
    }

    func run() async throws {
        var logger = Logger(label: "courier-server")
        logger.logLevel = logLevel
        let gateway = GatewayService(configuration: .init(host: bind, port: coapPort), logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: gateway)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
