import CoAP
import CourierCore
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// The admin API on the real binary's operations listener (`POST /admin/v1/provision`), and the
/// hidden test faults of `serve` that a client's delivery checks must catch.
final class AdminAPITests: XCTestCase {
    /// A provisioned fleet, as the answer lists it.
    struct Fleet {
        struct User: Equatable {
            var id: UInt64
            var name: String
            var devices: [(id: UInt64, name: String, token: String)]
            static func == (a: User, b: User) -> Bool { a.id == b.id && a.name == b.name && a.devices.map(\.id) == b.devices.map(\.id) }
        }

        var users: [User]
        var chats: [(id: UInt64, name: String, members: [UInt64])]

        init(_ json: [String: Any]) {
            func id(_ value: Any?) -> UInt64 { (value as! NSNumber).uint64Value }
            users = (json["users"] as! [[String: Any]]).map { user in
                User(id: id(user["id"]), name: user["name"] as! String, devices: (user["devices"] as! [[String: Any]]).map {
                    (id($0["id"]), $0["name"] as! String, $0["token"] as! String)
                })
            }
            chats = (json["chats"] as! [[String: Any]]).map { (id($0["id"]), $0["name"] as! String, ($0["member_user_ids"] as! [Any]).map(id)) }
        }
    }

    static var fleet: [String: Any] { ["prefix": "sim", "users": 50, "devices_per_user": 2, "chats": 10, "members_per_chat": 5, "token_days": 1] }

    func testAProvisionedFleetsTokensSendAndASecondRunReusesEveryIdWithNewTokens() async throws {
        try await withServer { server in
            let (status, json) = try await server.provision(Self.fleet)
            XCTAssertEqual(status, 200, "\(json)")
            let first = Fleet(json)
            XCTAssertEqual(first.users.map(\.name), (0..<50).map { "sim-u\($0)" })
            XCTAssertTrue(first.users.allSatisfy { $0.devices.map(\.name) == ["d0", "d1"] })
            XCTAssertEqual(Set(first.users.flatMap { $0.devices.map(\.token) }).count, 100, "one token per device")
            XCTAssertEqual(first.chats.map(\.name), (0..<10).map { "sim-c\($0)" })
            let stored = try await server.admin(["chat", "list"])["chats"] as! [[String: Any]]
            for (k, chat) in first.chats.enumerated() {
                XCTAssertEqual(chat.members, (0..<5).map { first.users[(k * 5 + $0) % 50].id }, "chat \(k)'s members are users (k*M + j) % N")
                let names = stored.first { ($0["id"] as! NSNumber).uint64Value == chat.id }?["members"] as? [String]
                XCTAssertEqual(Set(names ?? []), Set((0..<5).map { "sim-u\((k * 5 + $0) % 50)" }), "and storage holds exactly those")
            }

            // A device's token sends into its user's chat; user 7 is in chat 1 (users 5-9).
            let chat = first.chats[1]
            try await withClient { client in
                let response = try await client.send(SendMessage(clientMessageID: "first", chatID: chat.id, text: "hello", clientSentAtMs: 0), token: first.users[7].devices[1].token, to: server.peer)
                XCTAssertEqual(response.code, .created)
            }

            let (again, secondJSON) = try await server.provision(Self.fleet)
            XCTAssertEqual(again, 200)
            let second = Fleet(secondJSON)
            XCTAssertEqual(second.users, first.users, "the same users and devices")
            XCTAssertEqual(second.chats.map(\.id), first.chats.map(\.id), "the same chats")
            XCTAssertEqual(second.chats.map(\.members), first.chats.map(\.members))
            XCTAssertTrue(zip(second.users, first.users).allSatisfy { zip($0.devices, $1.devices).allSatisfy { $0.token != $1.token } }, "new tokens")
            let users = try await server.admin(["user", "list"])["users"] as! [Any]
            XCTAssertEqual(users.count, 50)
            try await withClient { client in
                for (id, token) in [("old", first.users[7].devices[1].token), ("new", second.users[7].devices[1].token)] {
                    let response = try await client.send(SendMessage(clientMessageID: id, chatID: chat.id, text: "with the \(id) token", clientSentAtMs: 0), token: token, to: server.peer)
                    XCTAssertEqual(response.code, .created, "the \(id) token works")
                }
            }
            let history = try await server.waitForHistory(chat.name, count: 3)
            XCTAssertEqual(history.map(\.clientMessageID), ["first", "old", "new"])

            // Chat 1 is live now; a provision with more members per chat
            // adds user 11 to it, and user 11 may send there at once.
            var wider = Self.fleet
            wider["members_per_chat"] = 6
            let (widened, widerJSON) = try await server.provision(wider)
            XCTAssertEqual(widened, 200)
            // The plan's members first, then the chat's earlier ones (user 5, from the first plan).
            XCTAssertEqual(Fleet(widerJSON).chats[1].members, (6..<12).map { first.users[$0].id } + [first.users[5].id])
            try await withClient { client in
                let response = try await client.send(SendMessage(clientMessageID: "joined", chatID: chat.id, text: "new member", clientSentAtMs: 0), token: first.users[11].devices[0].token, to: server.peer)
                XCTAssertEqual(response.code, .created)
            }
            XCTAssertTrue(server.serverLog().contains("admin provision"), "one info line per provision")
            XCTAssertFalse(server.serverLog().contains(first.users[0].devices[0].token), "tokens are never logged")
        }
    }

    func testAWrongTokenAndEveryInvalidFieldAreRefusedAndChangeNothing() async throws {
        try await withServer { server in
            let token = try server.adminToken()
            XCTAssertEqual(token.count, 64)
            XCTAssertTrue(token.allSatisfy { $0.isHexDigit && !$0.isUppercase })
            let mode = try FileManager.default.attributesOfItem(atPath: "\(server.dataDirectory)/admin.token")[.posixPermissions] as! NSNumber
            XCTAssertEqual(mode.intValue, 0o600)
            let printed = try await ExternalProgram.run(ServerProcess.binary, ["admin-token", "--data-dir", server.dataDirectory])
            XCTAssertEqual(printed.body, token, "admin-token prints the token the server uses")

            let body = try JSONSerialization.data(withJSONObject: Self.fleet)
            // The altered token changes its first digit to another one (a token may start with "0").
            let altered = (token.first == "0" ? "1" : "0") + token.dropFirst()
            for bearer in [nil, "", altered, token + "0", String(token.prefix(63))] {
                let response = try await server.httpPost("/admin/v1/provision", body: body, bearer: bearer)
                XCTAssertEqual(response.status, 401, "token \(bearer ?? "none")")
                let error = try JSONSerialization.jsonObject(with: response.body) as? [String: String]
                XCTAssertNotNil(error?["error"], String(decoding: response.body, as: UTF8.self))
            }

            func with(_ changes: [String: Any?]) -> [String: Any] {
                var request = Self.fleet
                for (key, value) in changes { request[key] = value }
                return request
            }
            let invalid: [(request: [String: Any], field: String)] = [
                (with(["prefix": nil]), "prefix"),
                (with(["prefix": ""]), "prefix"),
                (with(["prefix": "Sim"]), "prefix"),
                (with(["prefix": "sim_1"]), "prefix"),
                (with(["prefix": String(repeating: "a", count: 33)]), "prefix"),
                (with(["prefix": 7]), "prefix"),
                (with(["users": nil]), "users"),
                (with(["users": 0]), "users"),
                (with(["users": 100_001]), "users"),
                (with(["users": "50"]), "users"),
                (with(["users": 2.5]), "users"),
                (with(["devices_per_user": 0]), "devices_per_user"),
                (with(["devices_per_user": 17]), "devices_per_user"),
                (with(["users": 20_000, "devices_per_user": 11]), "devices_per_user"),
                (with(["chats": -1]), "chats"),
                (with(["chats": 100_001]), "chats"),
                (with(["members_per_chat": nil]), "members_per_chat"),
                (with(["members_per_chat": 0]), "members_per_chat"),
                (with(["members_per_chat": 51]), "members_per_chat"),
                (with(["token_days": 0]), "token_days"),
                (with(["token_days": 3651]), "token_days"),
                (with(["users_count": 3]), "users_count"),
            ]
            for (request, field) in invalid {
                let (status, json) = try await server.provision(request)
                XCTAssertEqual(status, 400, "\(request)")
                let message = json["error"] as? String ?? ""
                XCTAssertTrue(message.contains(field), "\(request): '\(message)' names \(field)")
            }
            for (raw, what) in [(Data("not json".utf8), "not JSON"), (Data("[1]".utf8), "not an object"), (Data(repeating: 0x20, count: 70_000), "over 64 KiB")] {
                let response = try await server.httpPost("/admin/v1/provision", body: raw, bearer: token)
                XCTAssertEqual(response.status, 400, what)
                XCTAssertNotNil((try? JSONSerialization.jsonObject(with: response.body) as? [String: String])?["error"], what)
            }

            let stats = try await server.admin(["stats"])
            XCTAssertEqual((stats["users"] as! NSNumber).intValue, 0, "nothing was created")
            XCTAssertEqual((stats["chats"] as! NSNumber).intValue, 0)
            let users = try await server.admin(["user", "list"])["users"] as! [Any]
            XCTAssertTrue(users.isEmpty)

            // Without chats, members_per_chat is neither needed nor checked.
            let (status, json) = try await server.provision(["prefix": "solo", "users": 2, "devices_per_user": 1, "chats": 0, "members_per_chat": 0])
            XCTAssertEqual(status, 200, "\(json)")
            XCTAssertEqual(Fleet(json).users.count, 2)
        }
    }

    func testDropEveryTwoAcknowledgesFourMessagesAndStoresTwo() async throws {
        try await withServer(["--test-drop-every", "2"]) { server in
            let history = try await sendFour(server)
            XCTAssertEqual(history.map(\.clientMessageID), ["m0", "m2"], "the 2nd and 4th are left out")
            XCTAssertEqual(history.map(\.sequence), [1, 2])
            let log = server.serverLog()
            XCTAssertTrue(log.contains("TEST FAULTS ARE ON"), "a loud warning at start")
            XCTAssertTrue(log.contains("clientMessageID=m1") && log.contains("clientMessageID=m3"), "each drop is named")
        }
    }

    func testDuplicateEveryTwoStoresTheSecondAndFourthTwice() async throws {
        try await withServer(["--test-duplicate-every", "2"]) { server in
            let history = try await sendFour(server, expecting: 6)
            XCTAssertEqual(history.map(\.clientMessageID), ["m0", "m1", "m1", "m2", "m3", "m3"])
            XCTAssertEqual(history.map(\.sequence), [1, 2, 3, 4, 5, 6])
            XCTAssertEqual(history[1].text, history[2].text)
            XCTAssertEqual(history[1].device, history[2].device)
            XCTAssertTrue(server.serverLog().contains("message stored twice"))
        }
    }

    func testTheTestFaultFlagsAreHiddenAndValidated() async throws {
        let help = try await ExternalProgram.run(ServerProcess.binary, ["serve", "--help"])
        XCTAssertFalse(help.text.contains("--test-"), "hidden from --help")
        for flag in ["--test-drop-every", "--test-duplicate-every"] {
            let refused = try await ExternalProgram.run(ServerProcess.binary, ["serve", flag, "0", "--data-dir", "/nonexistent/never"])
            XCTAssertNotEqual(refused.status, 0)
            XCTAssertTrue(refused.stderr.contains(flag), refused.stderr)
        }
    }

    /// Sends m0...m3 from one device, one after another, each answered 2.01; returns the chat's
    /// history once it holds `count` (and nothing more arrives for a moment).
    func sendFour(_ server: ServerProcess, expecting count: Int = 2) async throws -> [(sequence: UInt64, clientMessageID: String, text: String, device: UInt64)] {
        let alice = try await server.account("alice")
        let chat = try await server.chat("faulty", members: ["alice"])
        try await withClient { client in
            for number in 0..<4 {
                let response = try await client.send(SendMessage(clientMessageID: "m\(number)", chatID: chat, text: "message \(number)", clientSentAtMs: 0), token: alice.token, to: server.peer)
                XCTAssertEqual(response.code, .created, "m\(number) is acknowledged")
            }
        }
        _ = try await server.waitForHistory("faulty", count: count)
        try await Task.sleep(for: .milliseconds(500))
        return try await server.history("faulty")
    }
}
