import CoAP
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// Sign-in with a one-time invite code: `courier-server invite`, then `POST /v1/login` from a
/// client no one here wrote (aiocoap) and from `courier login --invite`.
final class InviteTests: XCTestCase {
    /// aiocoap-client's POST of a RedeemInvite: its CoAP code (from the diagnostic it prints
    /// for an error) and its payload.
    private func redeem(_ server: ServerProcess, code: String, device: String) async throws -> (status: Int32, body: Data, stderr: String) {
        let client = try ExternalProgram.locate("aiocoap-client", hint: "pip install aiocoap (scripts/install-deps)")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("courier-redeem-\(UUID().uuidString).bin")
        try Data(RedeemInvite(code: code, deviceName: device).serializedBytes()).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try await ExternalProgram.run(client, ["-m", "POST", "--content-format", "65001", "--payload", "@\(file.path)", "\(server.uri)/v1/login"])
        return (output.status, output.stdout, output.stderr + output.text)
    }

    private func users(_ server: ServerProcess) async throws -> [String: [String]] {
        let listed = try await server.admin(["user", "list"])
        var users: [String: [String]] = [:]
        for user in listed["users"] as! [[String: Any]] {
            users[user["name"] as! String] = (user["devices"] as! [[String: Any]]).map { $0["name"] as! String }
        }
        return users
    }

    func testAnInviteSignsInOnceAndAUsedExpiredOrUnknownCodeIsRefusedWith401AndCreatesNothing() async throws {
        try await withServer { server in
            let invite = try await server.admin(["invite", "alice"])
            let code = invite["code"] as! String
            XCTAssertEqual(invite["user_name"] as? String, "alice")

            let first = try await redeem(server, code: code, device: "laptop")
            XCTAssertEqual(first.status, 0, first.stderr)
            let signedIn = try SignedIn(serializedBytes: first.body)
            XCTAssertEqual(signedIn.userName, "alice")
            let users = try await self.users(server)
            XCTAssertEqual(users, ["alice": ["laptop"]])

            // The token is a device's like any other: it sends.
            let chat = try await server.chat("general", members: ["alice"])
            try await withClient { client in
                let sent = try await client.send(SendMessage(clientMessageID: "invited-1", chatID: chat, text: "signed in by invite", clientSentAtMs: 1), token: signedIn.token, to: server.peer)
                XCTAssertEqual(sent.code, .created)
            }

            // Used, unknown, expired: 4.01, and nothing created.
            let again = try await redeem(server, code: code, device: "phone")
            XCTAssertNotEqual(again.status, 0)
            XCTAssertTrue(again.stderr.contains("4.01"), again.stderr)
            let unknown = try await redeem(server, code: "AAAAAAAAAAAAAAAAAAAAAA", device: "phone")
            XCTAssertTrue(unknown.stderr.contains("4.01"), unknown.stderr)
            let expiring = try await server.admin(["invite", "carol", "--valid-seconds", "1"])
            try await Task.sleep(for: .milliseconds(1500))
            let expired = try await redeem(server, code: expiring["code"] as! String, device: "phone")
            XCTAssertTrue(expired.stderr.contains("4.01"), expired.stderr)
            let after = try await self.users(server)
            XCTAssertEqual(after, ["alice": ["laptop"]], "refused codes create no user and no device")
            let history = try await server.waitForHistory("general", count: 1)
            XCTAssertEqual(history.map(\.text), ["signed in by invite"])
        }
    }

    /// Guessing is limited per address: beyond a burst of 5, 4.29 with Max-Age.
    func testGuessingCodesFromOneAddressIsRateLimited() async throws {
        try await withServer { server in
            var codes: [CoAPCode] = []
            var maxAges: [UInt32] = []
            try await withClient { client in
                for index in 0..<12 {
                    let request = CoAPMessage.request(.post, path: "/v1/login", payload: RedeemInvite(code: "guess-\(index)", deviceName: "phone").serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
                    let answer = try await client.request(request, to: server.peer)
                    codes.append(answer.code)
                    if answer.code == .tooManyRequests { maxAges.append(answer.uintOption(.maxAge) ?? 0) }
                    XCTAssertLessThanOrEqual(answer.encode().count, request.encode().count, "a refusal is no larger than the guess")
                }
            }
            XCTAssertEqual(Array(codes.prefix(5)), Array(repeating: CoAPCode.unauthorized, count: 5))
            XCTAssertGreaterThanOrEqual(codes.count { $0 == .tooManyRequests }, 6, "\(codes)")
            XCTAssertTrue(maxAges.allSatisfy { $0 >= 1 }, "\(maxAges)")
        }
    }

    /// `courier login --invite` signs in and saves the device's token; the device is named by
    /// `--device`.
    func testCourierLoginWithAnInviteSavesAWorkingConfiguration() async throws {
        try await withServer { server in
            let invite = try await server.admin(["invite", "dana"])
            let user = ClientEndToEndTests.User("dana")
            let output = try await user.run([
                "login", "--invite", invite["code"] as! String, "--device", "terminal",
                "--server", "127.0.0.1", "--coap-port", "\(server.coapPort)", "--push-port", "\(server.pushPort)",
            ])
            XCTAssertTrue(output.contains("logged in as dana"), output)
            let users = try await self.users(server)
            XCTAssertEqual(users, ["dana": ["terminal"]])
            _ = try await server.chat("general", members: ["dana"])
            let sent = try await user.run(["send", "general", "from the invited terminal"])
            XCTAssertTrue(sent.hasPrefix("accepted"), sent)
            // The same code a second time: refused, with words a person can act on.
            let second = ClientEndToEndTests.User("dana-again")
            try await second.run([
                "login", "--invite", invite["code"] as! String, "--server", "127.0.0.1", "--coap-port", "\(server.coapPort)", "--push-port", "\(server.pushPort)",
            ], expectStatus: 1)
            let unchanged = try await self.users(server)
            XCTAssertEqual(unchanged, ["dana": ["terminal"]])
        }
    }
}
