// swift-tools-version:6.0
import PackageDescription

// Swift 6 language mode (the default for tools 6.0) gives complete strict concurrency checking.
let package = Package(
    name: "Courier",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "courier-server", targets: ["CourierServerCommand"]),
        .executable(name: "courier", targets: ["CourierCommand"]),
        .executable(name: "courier-sim", targets: ["CourierSimCommand"]),
        // For the fuzz package in Fuzz/, which builds the parsers with libFuzzer instrumentation.
        .library(name: "CoAP", targets: ["CoAP"]),
        .library(name: "CourierProtocol", targets: ["CourierProtocol"]),
        .library(name: "DTLS", targets: ["DTLS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
    ],
    targets: [
        // Shared: what both ends speak.
        .target(
            name: "CoAP",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Shared/CoAP"
        ),
        // OpenSSL 3 (Debian's libssl-dev) for DTLS: what Swift cannot call directly (macros, a
        // datagram BIO, cookie and PSK callbacks). CoAP stays free of it.
        .target(
            name: "CDTLS",
            path: "Shared/CDTLS",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // CoAP over DTLS 1.2: a NIO handler between the UDP socket and CoAP, per peer.
        .target(
            name: "DTLS",
            dependencies: [
                "CDTLS",
                "CoAP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Shared/DTLS"
        ),
        // WebSocket frames written straight into one buffer, for the server's pushes and the
        // devices' acknowledgements.
        .target(
            name: "WebSocketFraming",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Shared/WebSocketFraming"
        ),
        .target(
            name: "CourierProtocol",
            dependencies: [
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Shared/Protocol"
        ),

        // Server. Dependencies run one way, from the core out to the composition root
        // (README, "Layout"): Core, Log <- SQLite, Actors <- Ingest, Gateway, Push, Ops, Faults
        // <- App <- the command.
        // The message model, the storage protocol and what every part shares; no NIO, no GRDB.
        .target(
            name: "CourierCore",
            dependencies: [
                "CourierProtocol",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Server/Core"
        ),
        // The durable partitioned log: Courier's own, on files, with no dependencies.
        .target(name: "CourierLog", path: "Server/Log"),
        // The embedded store: SQLite through GRDB.
        .target(
            name: "CourierSQLite",
            dependencies: [
                "CourierCore",
                "CourierProtocol",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Server/SQLite"
        ),
        // The cluster store: PostgreSQL through postgres-nio, behind the same storage protocol.
        .target(
            name: "CourierPostgres",
            dependencies: [
                "CourierCore",
                "CourierProtocol",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Server/Postgres"
        ),
        // glibc's malloc_trim, which Swift's Glibc module does not expose.
        .target(name: "CourierMemory", path: "Server/Memory"),
        // Chat and Device actors in shard regions, and the live push sessions by user.
        .target(
            name: "CourierActors",
            dependencies: [
                "CourierCore",
                "CourierProtocol",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Server/Actors"
        ),
        // The log's consumers: partition readers, the chat store writer, parked chats.
        .target(
            name: "CourierIngest",
            dependencies: [
                "CourierActors",
                "CourierCore",
                "CourierLog",
                "CourierProtocol",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Server/Ingest"
        ),
        // The CoAP gateway: its resources and what they need to accept a message.
        .target(
            name: "CourierGateway",
            dependencies: [
                "CoAP",
                "CourierActors",
                "CourierCore",
                "CourierLog",
                "CourierProtocol",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Server/Gateway"
        ),
        // WebSocket push sessions.
        .target(
            name: "CourierPush",
            dependencies: [
                "WebSocketFraming",
                "CourierActors",
                "CourierCore",
                "CourierProtocol",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Server/Push"
        ),
        // The operations listener: health, metrics and the admin API.
        .target(
            name: "CourierOps",
            dependencies: [
                "CourierActors",
                "CourierCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Server/Ops"
        ),
        // Faults a server commits on purpose, for the tests that prove the oracle catches them:
        // decorators of the log and the store that only the composition root puts in place.
        .target(
            name: "CourierFaults",
            dependencies: [
                "CourierCore",
                "CourierLog",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Server/Faults"
        ),
        // The composition root: one node from its configuration.
        .target(
            name: "CourierApp",
            dependencies: [
                "DTLS",
                "CoAP",
                "CourierActors",
                "CourierCore",
                "CourierFaults",
                "CourierGateway",
                "CourierIngest",
                "CourierLog",
                "CourierMemory",
                "CourierOps",
                "CourierPostgres",
                "CourierPush",
                "CourierSQLite",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Server/App"
        ),
        .executableTarget(
            name: "CourierServerCommand",
            dependencies: [
                "CoAP",
                "CourierApp",
                "CourierCore",
                "CourierFaults",
                "CourierLog",
                "CourierOps",
                "CourierProtocol",
                "CourierPostgres",
                "CourierSQLite",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Server/Command"
        ),

        // Terminal client.
        // What every device does (the terminal client and the simulator's devices): send a
        // message until the server holds it, and keep a push session.
        .target(
            name: "CourierDevice",
            dependencies: [
                "WebSocketFraming",
                "CoAP",
                "CourierProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Shared/CourierDevice"
        ),
        .target(
            name: "CourierClient",
            dependencies: [
                "CoAP",
                "CourierDevice",
                "CourierProtocol",
                "DTLS",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Client/CourierClient"
        ),
        // ncursesw (Debian's libncurses-dev): wide characters for UTF-8 and emoji.
        .systemLibrary(name: "CNCurses", path: "Client/CNCurses", providers: [.apt(["libncurses-dev"])]),
        .target(
            name: "CourierTUI",
            dependencies: [
                "CNCurses",
                "CourierClient",
                "CourierProtocol",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Client/CourierTUI"
        ),
        .executableTarget(
            name: "CourierCommand",
            dependencies: [
                "CoAP",
                "CourierClient",
                "CourierProtocol",
                "CourierTUI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Client/CourierCommand"
        ),

        // Device simulator.
        .target(
            name: "CourierSimulator",
            dependencies: [
                "CoAP",
                "DTLS",
                "CourierDevice",
                "CourierProtocol",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            path: "Simulator/CourierSimulator"
        ),
        .executableTarget(
            name: "CourierSimCommand",
            dependencies: [
                "CoAP",
                "CourierDevice",
                "CourierSimulator",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Simulator/CourierSimCommand"
        ),

        // Tests.
        .target(
            name: "TestSupport",
            dependencies: [
                "CoAP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "CoAPTests",
            dependencies: [
                "CoAP",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/CoAPTests"
        ),
        .testTarget(
            name: "LogTests",
            dependencies: ["CourierLog", "TestSupport"],
            path: "Tests/LogTests"
        ),
        // The child process LogTests kills with SIGKILL; built with the tests.
        .executableTarget(
            name: "LogCrashWriter",
            dependencies: ["CourierLog"],
            path: "Tests/LogCrashWriter"
        ),
        .testTarget(
            name: "ProtocolTests",
            dependencies: ["CourierProtocol", "TestSupport"],
            path: "Tests/ProtocolTests"
        ),
        .testTarget(
            name: "InteropTests",
            dependencies: [
                "CoAP",
                "DTLS",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/InteropTests",
            exclude: ["Peers"]
        ),
        .testTarget(
            name: "ClientTests",
            dependencies: [
                "CoAP",
                "CourierClient",
                "CourierTUI",
                "CourierDevice",
                "CourierProtocol",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Tests/ClientTests"
        ),
        .testTarget(
            name: "SimulatorTests",
            dependencies: [
                "CoAP",
                "CourierDevice",
                "CourierProtocol",
                "CourierSimulator",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/SimulatorTests"
        ),
        .testTarget(
            name: "StorageTests",
            dependencies: [
                "CourierCore",
                "CourierPostgres",
                "CourierSQLite",
                "TestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/StorageTests"
        ),
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "CoAP",
                "CourierActors",
                "CourierDevice",
                "CourierApp",
                "CourierCore",
                "CourierGateway",
                "CourierIngest",
                "CourierLog",
                "CourierOps",
                "CourierProtocol",
                "CourierPush",
                "CourierSQLite",
                "DTLS",
                "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                "WebSocketFraming",
            ],
            path: "Tests/ServerTests",
            exclude: ["Peers"]
        ),
    ]
)
