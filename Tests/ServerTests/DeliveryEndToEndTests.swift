import CoAP
import CourierProtocol
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import XCTest

/// Delivery end to end: the real server, messages sent over CoAP, and devices on Python's
/// websockets (Peers/push_fleet.py) that must end with exactly their chats' histories.
final class DeliveryEndToEndTests: XCTestCase {
    func testARealClientGetsAMessageSentWithLibcoapAcknowledgesItAndTheSenderGetsAReceipt() async throws {
        let coapClient = try ExternalProgram.locate("coap-client-notls", hint: "apt-get install libcoap3-bin (scripts/install-deps)")
        try await withServer { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let general = try await server.chat("general", members: ["alice", "bob"])
            let notes = try await server.chat("notes", members: ["bob"])

            let fleet = try PushFleet(pushPort: server.pushPort, devices: [("alice", alice.token), ("bob", bob.token)], seed: 1, disconnectRate: 0)
            defer { fleet.stop() }
            try await fleet.waitUntilReady()

            var sent: [UInt64: SendResult] = [:]
            for (chat, id) in [(general, "libcoap-general"), (notes, "libcoap-notes")] {
                let file = FileManager.default.temporaryDirectory.appendingPathComponent("courier-send-\(UUID().uuidString).bin").path
                try Data(SendMessage(clientMessageID: id, chatID: chat, text: "sent with libcoap", clientSentAtMs: 1).serializedBytes()).write(to: URL(fileURLWithPath: file))
                let output = try await ExternalProgram.run(coapClient, ["-m", "post", "-t", "65001", "-f", file, "\(server.uri)/v1/msg?t=\(bob.token)"])
                XCTAssertEqual(output.status, 0, output.stderr)
                sent[chat] = try SendResult(serializedBytes: output.stdout.dropLast())
            }

            // Alice's acknowledgement is stored: a sync that states nothing then has nothing for her.
            try await Self.waitUntilSyncIsEmpty(server, token: alice.token)
            try await Task.sleep(for: .milliseconds(500))  // the receipt follows the stored cursor
            let result = try await fleet.finish(["alice": [general: 1], "bob": [general: 1, notes: 1]])
            XCTAssertFalse(result.timedOut, fleet.errorText.suffix(2000).description)

            let aliceHolds = try XCTUnwrap(result.devices["alice"])
            XCTAssertEqual(aliceHolds.chats, [general: [PushFleet.Message(sequence: 1, serverMessageID: sent[general]!.serverMessageID, clientMessageID: "libcoap-general", text: "sent with libcoap")]],
                           "the message, and nothing of a chat she is not in")
            XCTAssertEqual(result.devices["bob"]?.chats[notes]?.map(\.clientMessageID), ["libcoap-notes"])
            let receipts = try XCTUnwrap(result.devices["bob"]?.receipts)
            XCTAssertEqual(receipts.map(\.3), ["libcoap-general"], "bob hears that alice's device has it; 'notes' has no other member")
            XCTAssertEqual(receipts.first?.2, sent[general]!.serverMessageID)
            XCTAssertTrue(aliceHolds.receipts.isEmpty)
        }
    }

    func testFiftyDevicesInTenChatsEndWithExactlyTheirHistoriesWhileDevicesReconnect() async throws {
        try await Self.fleetScenario(killServerMidway: false)
    }

    func testAfterKillNineAndARestartEveryDeviceStillEndsWithExactlyItsHistories() async throws {
        try await Self.fleetScenario(killServerMidway: true)
    }

    /// 25 users with 2 devices each in 10 chats of 5 members; 600 messages sent over CoAP by
    /// random members (retried until acknowledged) while devices drop and reopen their
    /// sessions at random; optionally `kill -9` of the server halfway and a restart. Every
    /// device must end with exactly the stored history of each of its chats: in order, no gap,
    /// no duplicate, nothing of another chat.
    static func fleetScenario(killServerMidway: Bool) async throws {
        var random = SplitMix64(seed: killServerMidway ? 9 : 5)
        try await withServer { server in
            var tokens: [String: String] = [:]
            var users: [String] = []
            for index in 0..<25 {
                let user = "user\(index)"
                users.append(user)
                tokens["\(user)/phone"] = try await server.account(user).token
                tokens["\(user)/laptop"] = try await server.admin(["device", "add", user, "laptop"])["token"] as? String
            }
            var chats: [(id: UInt64, name: String, members: [String])] = []
            for index in 0..<10 {
                var members = Set<String>()
                while members.count < 5 { members.insert(users[Int(random.next() % UInt64(users.count))]) }
                let name = "chat\(index)"
                chats.append((try await server.chat(name, members: members.sorted()), name, members.sorted()))
            }

            let fleet = try PushFleet(pushPort: server.pushPort, devices: tokens.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, seed: random.next(), disconnectRate: 0.5)
            defer { fleet.stop() }
            try await fleet.waitUntilReady()

            let plan = (0..<600).map { index -> (SendMessage, String) in
                let chat = chats[index % chats.count]
                let sender = chat.members[Int(random.next() % UInt64(chat.members.count))]
                let device = random.next() % 2 == 0 ? "phone" : "laptop"
                return (SendMessage(clientMessageID: "m\(index)", chatID: chat.id, text: "message \(index) in \(chat.name)", clientSentAtMs: Date().milliseconds), tokens["\(sender)/\(device)"]!)
            }
            // About 6 s of sending; the kill comes at 2.5 s, with messages in flight.
            let acknowledged = NIOLockedValueBox(0)
            let acknowledgedAtKill = NIOLockedValueBox(0)
            try await withClient { client in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<6 {
                        group.addTask {
                            for (index, (message, token)) in plan.enumerated() where index % 6 == worker {
                                try await Self.sendUntilAcknowledged(message, token: token, client: client, server: server)
                                acknowledged.withLockedValue { $0 += 1 }
                                try await Task.sleep(for: .milliseconds(60))
                            }
                        }
                    }
                    if killServerMidway {
                        group.addTask {
                            try await Task.sleep(for: .milliseconds(2500))
                            await server.kill9()
                            acknowledgedAtKill.withLockedValue { $0 = acknowledged.withLockedValue { $0 } }
                            try await Task.sleep(for: .milliseconds(500))
                            try await server.start()
                        }
                    }
                    try await group.waitForAll()
                }
            }
            if killServerMidway {
                let atKill = acknowledgedAtKill.withLockedValue { $0 }
                print("fleet: \(atKill) of \(plan.count) messages acknowledged when the server was killed")
                XCTAssertTrue((1..<plan.count).contains(atKill), "the kill came mid-run")
            }

            var histories: [UInt64: [(sequence: UInt64, clientMessageID: String, text: String, device: UInt64)]] = [:]
            var expected: [String: [UInt64: UInt64]] = [:]
            for chat in chats {
                let history = try await server.waitForHistory(chat.name, count: 60)
                histories[chat.id] = history
                for member in chat.members {
                    for device in ["phone", "laptop"] { expected["\(member)/\(device)", default: [:]][chat.id] = UInt64(history.count) }
                }
            }
            let stored = histories.values.flatMap { $0.map(\.clientMessageID) }
            XCTAssertEqual(stored.sorted(), plan.map(\.0.clientMessageID).sorted(), "every acknowledged message stored once")

            let result = try await fleet.finish(expected)
            XCTAssertFalse(result.timedOut, "some device did not get everything: \(fleet.errorText.suffix(3000))")
            var sessions = 0
            var duplicates = 0
            for (device, holds) in result.devices.sorted(by: { $0.key < $1.key }) {
                sessions += holds.sessions
                duplicates += holds.duplicates
                XCTAssertEqual(holds.gaps, [], "\(device) saw a gap")
                XCTAssertEqual(Set(holds.chats.keys), Set(expected[device]?.keys ?? [:].keys), "\(device) holds exactly its chats")
                for (chat, messages) in holds.chats {
                    let history = histories[chat] ?? []
                    XCTAssertEqual(messages.map(\.sequence), history.map(\.sequence), "\(device) chat \(chat): in order, no gap, no duplicate")
                    XCTAssertEqual(messages.map(\.clientMessageID), history.map(\.clientMessageID), "\(device) chat \(chat): the stored messages")
                }
            }
            print("fleet: \(result.devices.count) devices, \(sessions) sessions, \(duplicates) duplicate pushes dropped by devices, killed midway: \(killServerMidway)")
            XCTAssertGreaterThan(sessions, result.devices.count, "devices did reconnect during the run")
        }
    }

    /// Sends until the gateway acknowledges, with a new exchange after each timeout (the server
    /// may be down); the same client message id every time.
    static func sendUntilAcknowledged(_ message: SendMessage, token: String, client: CoAPEndpoint, server: ServerProcess) async throws {
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline {
            let peer = server.peer
            if let response = try? await ServerProcess.withTimeout(.seconds(2), { try await client.send(message, token: token, to: peer) }) {
                if response.code == .created { return }
                if response.code.codeClass == 4 { throw ServerTestError("\(message.clientMessageID) refused: \(response.code)") }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ServerTestError("\(message.clientMessageID) never acknowledged")
    }

    static func waitUntilSyncIsEmpty(_ server: ServerProcess, token: String) async throws {
        let deadline = Date().addingTimeInterval(20)
        try await withClient { client in
            while true {
                let response = try await client.request(.request(.post, path: "/v1/sync", query: ["t=\(token)"], payload: SyncRequest(have: [], limit: 0).serializedBytes()), to: server.peer)
                if response.code == .content, try SyncResponse(serializedBytes: response.payload).messages.isEmpty { return }
                if Date() > deadline { throw ServerTestError("the device's acknowledgement was never stored") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}
