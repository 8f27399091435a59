// swift-tools-version:6.0
import Foundation
import PackageDescription

// The libFuzzer targets for Courier's input parsers. Built apart from the root package, with its
// own scratch path, so the fuzzer instrumentation never touches the main build; scripts/fuzz
// builds and runs them:
//
//   swift build --package-path Fuzz --scratch-path Fuzz/.build -c debug \
//       -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld
//
// Each executable has its own main, which hands libFuzzer the test through LLVMFuzzerRunDriver,
// so no -parse-as-library is needed.

// A path dependency's identity is its directory's name, which depends on where the repository
// was checked out.
let courier = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "CourierFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
    ],
    targets: [
        // libFuzzer's entry point for a program with its own main.
        .target(name: "CFuzzerDriver", path: "Sources/CFuzzerDriver"),
        .target(name: "FuzzerDriver", dependencies: ["CFuzzerDriver"], path: "Sources/FuzzerDriver"),
        .executableTarget(
            name: "fuzz-coap-codec",
            dependencies: ["FuzzerDriver", .product(name: "CoAP", package: courier)],
            path: "Sources/CoAPCodecFuzz"
        ),
        .executableTarget(
            name: "fuzz-protobuf-decode",
            dependencies: ["FuzzerDriver", .product(name: "CourierProtocol", package: courier)],
            path: "Sources/ProtobufDecodeFuzz"
        ),
        .executableTarget(
            name: "fuzz-websocket-frames",
            dependencies: [
                "FuzzerDriver",
                .product(name: "CourierProtocol", package: courier),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Sources/WebSocketFrameFuzz"
        ),
        .executableTarget(
            name: "fuzz-dtls-records",
            dependencies: [
                "FuzzerDriver",
                .product(name: "CoAP", package: courier),
                .product(name: "DTLS", package: courier),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Sources/DTLSRecordFuzz"
        ),
    ]
)
