import CoAP
import CourierProtocol
import Foundation
import NIOCore
import TestSupport
import XCTest

/// Guarantees 7 and 8 against the real server: every bad request gets its code and a Protobuf
/// error body, nothing is stored, and the server keeps answering.
final class BadInputTests: XCTestCase {
    func testEveryBadRequestGetsItsCodeAndStoresNothing() async throws {
        let configFile = FileManager.default.temporaryDirectory.appendingPathComponent("courier-config-\(UUID().uuidString).json").path
        // No token cache, so a revocation is seen at once.
        try Data(#"{"tokenCacheSeconds": 0, "maxTextBytes": 1000}"#.utf8).write(to: URL(fileURLWithPath: configFile))
        try await withServer(["--config", configFile]) { server in
            let alice = try await server.account("alice")
            let mallory = try await server.account("mallory")
            let chat = try await server.chat("general", members: ["alice"])
            let peer = server.peer
            try await withClient { client in
                func post(_ payload: [UInt8], query: [String], path: String = "/v1/msg", method: CoAPCode = .post) async throws -> CoAPMessage {
                    try await client.request(.request(method, path: path, query: query, payload: payload, contentFormat: CoAPContentFormat.protobuf), to: peer)
                }
                func expect(_ response: CoAPMessage, _ code: CoAPCode, _ wire: WireErrorCode?, _ what: String) {
                    XCTAssertEqual(response.code, code, what)
                    if let wire {
                        let error = try? WireError(serializedBytes: response.payload)
                        XCTAssertEqual(error?.code, wire, "\(what): \(String(decoding: response.payload, as: UTF8.self))")
                    }
                }
                let good = SendMessage(clientMessageID: "good-1", chatID: chat, text: "a fine message", clientSentAtMs: 0)
                let token = ["t=\(alice.token)"]

                expect(try await post(good.serializedBytes(), query: []), .unauthorized, .unauthorized, "no token")
                expect(try await post(good.serializedBytes(), query: ["t=AAAAAAAAAAAAAAAAAAAAAA"]), .unauthorized, .unauthorized, "unknown token")
                expect(try await post(good.serializedBytes(), query: ["t=" + String(repeating: "x", count: 200)]), .unauthorized, .unauthorized, "absurd token")
                expect(try await post([0xFF, 0x01, 0x02], query: token), .badRequest, .badRequest, "not Protobuf")
                expect(try await post(SendMessage(clientMessageID: "", chatID: chat, text: "x", clientSentAtMs: 0).serializedBytes(), query: token), .badRequest, .badRequest, "no client message id")
                expect(try await post(SendMessage(clientMessageID: "z", chatID: 0, text: "x", clientSentAtMs: 0).serializedBytes(), query: token), .badRequest, .badRequest, "no chat")
                expect(try await post(SendMessage(clientMessageID: "e", chatID: chat, text: "", clientSentAtMs: 0).serializedBytes(), query: token), .badRequest, .badRequest, "empty text")
                expect(try await post(SendMessage(clientMessageID: "big", chatID: chat, text: String(repeating: "b", count: 1001), clientSentAtMs: 0).serializedBytes(), query: token), .requestEntityTooLarge, .tooLarge, "text over the limit")
                expect(try await post([UInt8](repeating: 0x41, count: 70_000), query: token), .requestEntityTooLarge, nil, "body over 64 KiB (Block1)")
                expect(try await post(good.serializedBytes(), query: token, path: "/v1/nothing"), .notFound, nil, "unknown path")
                expect(try await post(good.serializedBytes(), query: token, method: .get), .methodNotAllowed, nil, "GET on /v1/msg")
                expect(try await post(SendMessage(clientMessageID: "nochat", chatID: 987_654, text: "x", clientSentAtMs: 0).serializedBytes(), query: token), .notFound, .notFound, "a chat that does not exist")
                expect(try await post(good.serializedBytes(), query: ["t=\(mallory.token)"]), .forbidden, .forbidden, "a chat the sender is not in")

                // The one good message, then its id reused for another text.
                expect(try await post(good.serializedBytes(), query: token), .created, nil, "the good message")
                var reused = good
                reused.text = "something else"
                expect(try await post(reused.serializedBytes(), query: token), .conflict, .conflict, "a client message id reused")

                // Revocation is seen by the running server.
                _ = try await server.admin(["token", "revoke", alice.token])
                expect(try await post(SendMessage(clientMessageID: "after-revoke", chatID: chat, text: "x", clientSentAtMs: 0).serializedBytes(), query: token), .unauthorized, .unauthorized, "revoked token")
            }
            // Malformed datagrams, block-wise abuse, hostile Protobuf and amplification have their
            // tables in HostileInputReliabilityTests.

            try await Task.sleep(for: .milliseconds(500))
            let stored = try await server.history("general").map(\.clientMessageID)
            XCTAssertEqual(stored, ["good-1"], "only the good message was stored")
            let count = try await server.messageCount()
            XCTAssertEqual(count, 1)
            XCTAssertTrue(server.isRunning, "no input crashed the server")
            try await withClient { client in
                let health = try await client.request(.request(.get, path: "/v1/health"), to: peer)
                XCTAssertEqual(health.code, .content)
            }
        }
    }

    func testAdminRefusesBadInputClearly() async throws {
        let server = try await ServerProcess()
        defer { server.remove() }
        _ = try await server.account("alice")
        let duplicate = try await server.adminFailure(["user", "add", "alice"])
        XCTAssertNotEqual(duplicate.status, 0)
        XCTAssertTrue(duplicate.stderr.contains("already exists"), duplicate.stderr)
        let missing = try await server.adminFailure(["chat", "create", "x", "--member", "nobody"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("not found"), missing.stderr)
        let badLimit = try await server.adminFailure(["chat", "history", "x", "--limit", "0"])
        XCTAssertNotEqual(badLimit.status, 0)
        let chats = try await server.admin(["chat", "list"])["chats"] as? [[String: Any]]
        XCTAssertEqual(chats?.count, 0, "the failed create made no chat")
    }
}
