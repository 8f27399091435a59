import CoAP
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// The data directory on a small filesystem that fills up: sends fail with a clear 5.xx and are
/// never acknowledged, the server stays up, and it takes messages again once there is room.
final class DiskFullReliabilityTests: ReliabilityTestCase {
    func testAFullDiskRefusesSendsWith5xxKeepsServingAndResumesWhenSpaceReturns() async throws {
        guard getuid() == 0 else { throw XCTSkip("mounting a small tmpfs needs root") }
        let mountPoint = FileManager.default.temporaryDirectory.appendingPathComponent("courier-full-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try await ExternalProgram.run(try ExternalProgram.locate("mount", hint: "apt-get install mount"), ["-t", "tmpfs", "-o", "size=32m", "tmpfs", mountPoint])
        XCTAssertEqual(mount.status, 0, "mount a 32 MiB tmpfs: \(mount.stderr)")
        guard mount.status == 0 else { return }
        fault = "data directory on a 32 MiB tmpfs, filled to the last byte"
        let server = try await ServerProcess(dataDirectory: "\(mountPoint)/data")
        do {
            try await exercise(server, filler: "\(mountPoint)/filler")
        } catch {
            XCTFail("\(error)\n--- server log ---\n\(server.serverLog().suffix(3000))")
        }
        await server.kill9()
        server.remove()
        _ = try? await ExternalProgram.run(try ExternalProgram.locate("umount", hint: "apt-get install mount"), [mountPoint])
        try? FileManager.default.removeItem(atPath: mountPoint)
    }

    private func exercise(_ server: ServerProcess, filler: String) async throws {
        // One device sends until the log's room is used up (up to 64 KiB of zeros written ahead
        // per segment, several hundred messages): past the per-device rate that would be 4.29.
        try await server.start(["--config", try ServerProcess.configFile(ServerProcess.unlimitedDeviceRate)])
        let alice = try await server.account("alice")
        _ = try await server.account("bob")
        let chat = try await server.chat("full", members: ["alice", "bob"])
        func message(_ index: Int) -> SendMessage {
            SendMessage(clientMessageID: "m\(index)", chatID: chat, text: "message \(index)", clientSentAtMs: 0)
        }
        try await withClient { client in
            for index in 0..<3 {
                let response = try await client.send(message(index), token: alice.token, to: server.peer)
                XCTAssertEqual(response.code, .created)
            }
            _ = try await server.waitForHistory("full", count: 3)

            let filled = try Self.fill(filler)
            // The log's segment may still have room written ahead: send until refused.
            var next = 3
            var first: CoAPMessage?
            while first == nil, next < 3 + 5_000 {
                let response = try await client.send(message(next), token: alice.token, to: server.peer)
                if response.code == .created { next += 1 } else { first = response }
            }
            let takenWhileFull = next - 3
            let refusal = try XCTUnwrap(first, "a full disk refuses sends")
            var refusals = [refusal]
            for index in next + 1..<next + 5 { refusals.append(try await client.send(message(index), token: alice.token, to: server.peer)) }
            for response in refusals {
                XCTAssertEqual(response.code.codeClass, 5, "a full disk is a 5.xx, never an acknowledgement: \(response.code)")
                XCTAssertNotNil(response.uintOption(.maxAge), "a refusal says when to try again")
            }
            let reasons = Set(refusals.map { "\($0.code) \((try? WireError(serializedBytes: $0.payload))?.message ?? "")" }).sorted().joined(separator: "; ")
            let health = try await client.request(.request(.get, path: "/v1/health"), to: server.peer)
            XCTAssertEqual(health.code, .content, "the server stays up")
            XCTAssertTrue(server.isRunning)

            try FileManager.default.removeItem(atPath: filler)
            // The device retries the refused messages; none of them was stored.
            let total = next + 5
            for index in next..<total {
                var response = try await client.send(message(index), token: alice.token, to: server.peer)
                var tries = 1
                while response.code != .created, tries < 100 {
                    tries += 1
                    try await Task.sleep(for: .milliseconds(100))
                    response = try await client.send(message(index), token: alice.token, to: server.peer)
                }
                XCTAssertEqual(response.code, .created, "room again: message \(index) is taken")
            }
            let history = try await server.waitForHistory("full", count: total)
            XCTAssertEqual(history.map(\.text), (0..<total).map { "message \($0)" }, "every message once, in order")
            XCTAssertEqual(history.map(\.sequence), (1...total).map(UInt64.init))
            figure = "filled \(filled / 1_048_576) MiB; \(takenWhileFull) more fit, then 5/5 refused (\(reasons)); server up; space back: 5/5 taken, history \(total) in order"
        }
    }

    /// Writes `path` until the filesystem is full; returns the bytes written.
    private static func fill(_ path: String) throws -> Int {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var written = 0
        for chunk in [1 << 20, 4096, 512] {
            let bytes = Data(count: chunk)
            while (try? handle.write(contentsOf: bytes)) != nil { written += chunk }
        }
        return written
    }
}
