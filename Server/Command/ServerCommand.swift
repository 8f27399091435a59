import ArgumentParser
import CoAP
import CourierApp
import CourierFaults
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

@main
enum ServerMain {
    /// Swift's tasks run on the NIO event loops rather than on a pool of their own, so a task
    /// that answers a datagram or writes a push runs on the thread that does the I/O, with no
    /// hand-over between two sets of threads (the largest source of context switches measured
    /// by scripts/bench-cost). It has to happen before the first task starts.
    static func main() {
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        Task {
            await ServerCommand.main()
            exit(0)
        }
        dispatchMain()
    }
}

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "courier-server",
        abstract: "Courier's server: CoAP gateway, durable log, chat actors and history.",
        discussion: """
            With no subcommand it serves. Admin subcommands work on the same data directory and \
            are safe to run while the server runs.
            """,
        subcommands: [Serve.self, Migrate.self, UserCommand.self, DeviceCommand.self, InviteCommand.self, TokenCommand.self, ChatCommand.self, Search.self, Stats.self, AdminTokenCommand.self, BenchLog.self, BenchSend.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the server until SIGINT or SIGTERM.",
        discussion: """
            Settings come from, lowest first: built-in defaults, the JSON file given by --config \
            (keys: \(ServerConfiguration.CodingKeys.allCases.map(\.rawValue).joined(separator: ", "))), \
            environment variables COURIER_<KEY IN UPPER SNAKE CASE> (e.g. COURIER_COAP_PORT), and \
            these flags. Defaults: data directory ./courier-data, CoAP on 0.0.0.0:5683 with 2 \
            sockets, push WebSocket on 0.0.0.0:8080 (/v1/push), operations HTTP (/health, /ready, \
            /metrics, POST /admin/v1/provision with the token of `courier-server admin-token`) on \
            127.0.0.1:8081.
            """
    )

    @Option(help: "JSON configuration file.")
    var config: String?

    @Option(name: .customLong("data-dir"), help: "Data directory (log and database).")
    var dataDirectory: String?

    @Option(help: "Address the CoAP gateway binds to.")
    var bind: String?

    @Option(help: "UDP port of the CoAP gateway (0: any free port).")
    var coapPort: Int?

    @Option(help: "UDP port of CoAP over DTLS (coaps://; default 5684), opened with --dtls-psk or --tls-certificate.")
    var coapsPort: Int?

    @Flag(help: "Devices may prove themselves over DTLS with a pre-shared key (`device add --psk`).")
    var dtlsPsk = false

    @Option(help: "PEM certificate chain of this server, for DTLS (an ECDSA P-256 key, RFC 7925).")
    var tlsCertificate: String?

    @Option(help: "PEM private key of --tls-certificate.")
    var tlsKey: String?

    @Option(help: "PEM authorities whose client certificates name devices over DTLS (common name USER/DEVICE).")
    var tlsClientCa: String?

    @Option(help: "TCP port of push over TLS (wss://; default 8443), opened with --tls-certificate.")
    var pushTlsPort: Int?

    @Flag(help: "Open no clear-text port: CoAP only over DTLS, push only over TLS (needs --tls-certificate).")
    var requireSecure = false

    @Option(help: "UDP sockets sharing the CoAP port, one per event loop.")
    var coapChannels: Int?

    @Option(help: "Address of the operations HTTP listener.")
    var httpBind: String?

    @Option(help: "TCP port of the operations HTTP listener (0: any free port).")
    var httpPort: Int?

    @Option(help: "TCP port of the push WebSocket listener (0: any free port).")
    var pushPort: Int?

    @Option(help: "This node's id in message ids (0-1023).")
    var nodeID: Int?

    @Option(help: "Run as a node of the cluster on this PostgreSQL (postgres://USER:PASSWORD@HOST:PORT/DATABASE; run `migrate` first). Without it: the embedded server.")
    var postgres: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    @Flag(help: "Keep Linux's normal scheduling for the server's threads (by default they run under SCHED_BATCH: a woken thread does not preempt a running one).")
    var normalScheduling = false

    @Flag(help: "Benchmarks only: skip fdatasync in the log (acknowledged messages can be lost).")
    var unsafeNoSync = false

    // Tests only, so hidden, and never from the configuration file or the environment.
    @Option(help: ArgumentHelp("Tests only: acknowledge every Nth message but never store or push it.", visibility: .hidden))
    var testDropEvery: Int?

    @Option(help: ArgumentHelp("Tests only: store and push every Nth message twice.", visibility: .hidden))
    var testDuplicateEvery: Int?

    @Option(help: ArgumentHelp("Tests only: kill the process (SIGKILL) just before the Nth offset commit.", visibility: .hidden))
    var testCrashBeforeCommit: Int?

    @Option(help: ArgumentHelp("Tests only: CHAT:SECONDS, every store into the chat fails for that long.", visibility: .hidden))
    var testFailChatStore: String?

    var testFaults: TestFaults {
        get throws {
            TestFaults(
                dropEvery: testDropEvery, duplicateEvery: testDuplicateEvery, crashBeforeCommit: testCrashBeforeCommit,
                failChatStore: try testFailChatStore.map(TestFaults.chatStoreFailure)
            )
        }
    }

    func resolvedConfiguration() throws -> ServerConfiguration {
        var configuration = try config.map(ServerConfiguration.load(file:)) ?? ServerConfiguration()
        try configuration.apply(environment: ProcessInfo.processInfo.environment)
        if let dataDirectory { configuration.dataDirectory = dataDirectory }
        if let bind { configuration.coapHost = bind }
        if let coapPort { configuration.coapPort = coapPort }
        if let coapChannels { configuration.coapChannels = coapChannels }
        if let coapsPort { configuration.coapsPort = coapsPort }
        if dtlsPsk { configuration.dtlsPsk = true }
        if let tlsCertificate { configuration.tlsCertificate = tlsCertificate }
        if let tlsKey { configuration.tlsKey = tlsKey }
        if let tlsClientCa { configuration.tlsClientCa = tlsClientCa }
        if let pushTlsPort { configuration.pushTlsPort = pushTlsPort }
        if requireSecure { configuration.requireSecure = true }
        if let httpBind { configuration.httpHost = httpBind }
        if let httpPort { configuration.httpPort = httpPort }
        if let pushPort { configuration.pushPort = pushPort }
        if let nodeID { configuration.nodeID = nodeID }
        if let logLevel { configuration.logLevel = logLevel }
        if let postgres { configuration.postgres = postgres }
        if unsafeNoSync { configuration.unsafeNoSync = true }
        if normalScheduling { configuration.batchScheduling = false }
        try configuration.validate()
        return configuration
    }

    func validate() throws {
        do {
            _ = try resolvedConfiguration()
            try testFaults.validate()
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func run() async throws {
        let configuration = try resolvedConfiguration()
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "courier-server")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
        if let files = FileDescriptorLimit.raise() {
            logger.info("open file limit", metadata: ["soft": "\(files.soft)", "hard": "\(files.hard)"])
        } else {
            logger.warning("cannot read the open file limit")
        }
        if configuration.batchScheduling {
            let failures = BatchScheduling.apply()
            if failures.isEmpty {
                logger.info("threads run under SCHED_BATCH (batchScheduling)")
            } else {
                logger.warning("some threads keep the normal scheduling policy", metadata: ["failures": "\(failures)"])
            }
        }
        if configuration.postgres != nil {
            guard !(try testFaults).isActive else { throw ValidationError("test faults need the embedded server (no --postgres)") }
            try await ClusterNode.start(configuration: configuration, logger: logger).run()
            return
        }
        let server = try CourierNode(configuration: configuration, testFaults: try testFaults, logger: logger)
        try await server.run()
    }
}
