import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// The push endpoint with a WebSocket client no one here wrote (Python's websockets).
/// Work in progress with issue 5: the session opens, authenticates and heartbeats; pushes come next.
final class PushTests: XCTestCase {
    static let client = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/push_client.py").path

    static func run(_ server: ServerProcess, origin: String = "-", _ frames: [ClientFrame], thenBytes big: Int? = nil, hold: Double? = nil) async throws -> [String] {
        let python = try ExternalProgram.locate("python3", hint: "apt-get install python3")
        let hex = frames.map { $0.serializedBytes().map { String(format: "%02x", $0) }.joined() } + (big.map { ["big:\($0)"] } ?? []) + (hold.map { ["hold:\($0)"] } ?? [])
        let output = try await ExternalProgram.run(python, [Self.client, "ws://127.0.0.1:\(server.pushPort)/v1/push", origin] + hex, timeout: 60)
        XCTAssertEqual(output.status, 0, output.stderr)
        return output.text.split(separator: "\n").map(String.init)
    }

    static func serverFrame(_ line: String) -> ServerFrame? {
        guard line.hasPrefix("frame ") else { return nil }
        let hex = Array(line.dropFirst(6))
        let bytes = stride(from: 0, to: hex.count, by: 2).map { UInt8(String(hex[$0..<$0 + 2]), radix: 16)! }
        return try? ServerFrame(serializedBytes: bytes)
    }

    func testARealClientAuthenticatesHeartbeatsAndIsRefusedWhenItShouldBe() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")

            let good = try await Self.run(server, [.hello(Hello(token: alice.token, have: [], clientName: "test")), .heartbeat(Heartbeat(sentAtMs: 1))])
            XCTAssertEqual(good.count, 3, "\(good)")
            guard case .welcome(let welcome)? = Self.serverFrame(good[0]) else { return XCTFail("no Welcome: \(good)") }
            XCTAssertEqual(welcome.userID, alice.userID)
            XCTAssertEqual(welcome.deviceID, alice.deviceID)
            XCTAssertEqual(welcome.heartbeatIntervalMs, 30_000)
            guard case .heartbeat? = Self.serverFrame(good[1]) else { return XCTFail("no heartbeat answer: \(good)") }
            XCTAssertEqual(good[2], "pong", "a real client's ping gets a pong")

            let bad = try await Self.run(server, [.hello(Hello(token: "AAAAAAAAAAAAAAAAAAAAAA", have: [], clientName: "test"))])
            guard case .error(let error)? = Self.serverFrame(bad.first ?? "") else { return XCTFail("no error frame: \(bad)") }
            XCTAssertEqual(error.code, .unauthorized)
            XCTAssertEqual(bad.last, "closed 1008 bad token", "closed with a clear reason, and no data")

            let early = try await Self.run(server, [.heartbeat(Heartbeat(sentAtMs: 1))])
            XCTAssertEqual(early.last, "closed 1008 Hello must come first")

            let foreign = try await Self.run(server, origin: "http://evil.example", [.hello(Hello(token: alice.token, have: [], clientName: "x"))])
            XCTAssertEqual(foreign, ["refused 403"], "an Origin not on the allowlist is refused at the upgrade")

            let huge = try await Self.run(server, [.hello(Hello(token: alice.token, have: [], clientName: "test"))], thenBytes: 70_000)
            XCTAssertTrue(huge.last?.hasPrefix("closed 1009") ?? false, "a message above the limit closes the session: \(huge)")
        }
    }

    func testSessionsBeyondTheBoundAreToldToComeBackLater() async throws {
        let configFile = FileManager.default.temporaryDirectory.appendingPathComponent("courier-push-\(UUID().uuidString).json").path
        try Data(#"{"maxPushSessions": 1}"#.utf8).write(to: URL(fileURLWithPath: configFile))
        try await withServer(["--config", configFile]) { server in
            let alice = try await server.account("alice")
            let hello = ClientFrame.hello(Hello(token: alice.token, have: [], clientName: "test"))
            async let first = Self.run(server, [hello], hold: 3)
            try await Task.sleep(for: .milliseconds(1500))
            let second = try await Self.run(server, [hello])
            XCTAssertEqual(second.last, "closed 1013 too many sessions", "\(second)")
            let held = try await first
            guard case .welcome? = Self.serverFrame(held.first ?? "") else { return XCTFail("the first session was admitted: \(held)") }
            let third = try await Self.run(server, [hello])
            guard case .welcome? = Self.serverFrame(third.first ?? "") else { return XCTFail("a place is free again once the first left: \(third)") }
        }
    }
}
