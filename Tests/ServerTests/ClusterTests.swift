import CoAP
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// Cluster mode with real processes: `courier-server` nodes on one real PostgreSQL (a throwaway
/// server, `TestPostgres`), judged by the simulator's oracle across them.
final class ClusterTests: XCTestCase {
    /// Every device keeps its push session on one node and sends through another, so every
    /// message is committed by one node and pushed by the others.
    func testThreeNodesSpreadDevicesAndTheOracleFindsNothingLostDuplicatedOrReordered() async throws {
        try await withCluster(nodes: 3) { nodes in
            let run = try await Simulator.run(cluster: nodes, ["--users", "30", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "6", "--ramp-up", "1"])
            assertOracleClean(run)
            XCTAssertEqual(run.verdictCount("delivered"), run.verdictCount("expected_deliveries"), run.table)
            for node in nodes {
                let pushed = try await node.metric("courier_push_messages_total") ?? 0
                XCTAssertGreaterThan(pushed, 0, "every node pushed to the devices it holds")
            }
        }
    }

    /// A retry sent to another node is the same message: same server id, same sequence; the
    /// same client message id with another text is a conflict on any node.
    func testARetryOnAnotherNodeGetsTheSameIDAndSequence() async throws {
        try await withCluster(nodes: 2) { nodes in
            let ann = try await nodes[0].account("ann")
            let chat = try await nodes[0].chat("general", members: ["ann"])
            try await withClient { client in
                var message = SendMessage(clientMessageID: "m-1", chatID: chat, text: "hello from two nodes", clientSentAtMs: 0)
                var answers: [SendResult] = []
                for node in [nodes[0], nodes[1], nodes[0]] {
                    let response = try await client.send(message, token: ann.token, to: node.peer)
                    XCTAssertEqual(response.code, .created)
                    answers.append(try SendResult(serializedBytes: response.payload))
                }
                XCTAssertEqual(Set(answers.map(\.serverMessageID)).count, 1, "\(answers)")
                XCTAssertEqual(answers.map(\.chatSequence), [1, 1, 1])
                message.text = "another text under the same id"
                let conflict = try await client.send(message, token: ann.token, to: nodes[1].peer)
                XCTAssertEqual(conflict.code, .conflict)
                let second = SendMessage(clientMessageID: "m-2", chatID: chat, text: "next", clientSentAtMs: 0)
                let next = try await client.send(second, token: ann.token, to: nodes[1].peer)
                XCTAssertEqual(try SendResult(serializedBytes: next.payload).chatSequence, 2, "the sequence goes on gapless on the other node")
                let nul = try await client.send(SendMessage(clientMessageID: "m-3", chatID: chat, text: "a\u{0}b", clientSentAtMs: 0), token: ann.token, to: nodes[0].peer)
                XCTAssertEqual(nul.code, .badRequest, "PostgreSQL cannot store NUL: a clear refusal, not a 5.03 for ever")

                // An edit is an entry like a message: retried on the other node, applied once;
                // another user's edit is refused.
                let edit = SendMessage(clientMessageID: "e-1", chatID: chat, text: "hello, edited", clientSentAtMs: 0, change: .edit(sequence: 1))
                var edits: [SendResult] = []
                for node in [nodes[1], nodes[0]] {
                    let response = try await client.send(edit, token: ann.token, to: node.peer)
                    XCTAssertEqual(response.code, .created, String(decoding: response.payload, as: UTF8.self))
                    edits.append(try SendResult(serializedBytes: response.payload))
                }
                XCTAssertEqual(edits.map(\.chatSequence), [3, 3])
                let bob = try await nodes[0].account("bob")
                try await nodes[0].admin(["chat", "add", "general", "bob"])
                let foreign = try await client.send(SendMessage(clientMessageID: "b-1", chatID: chat, text: "mine now", clientSentAtMs: 0, change: .edit(sequence: 1)), token: bob.token, to: nodes[1].peer)
                XCTAssertEqual(foreign.code, .forbidden)
            }
            let history = try await nodes[1].history("general")
            XCTAssertEqual(history.map(\.clientMessageID), ["m-1", "m-2", "e-1"])
            XCTAssertEqual(history.map(\.text), ["hello, edited", "next", "hello, edited"])
        }
    }

    /// Presence across nodes: ann, connected to node 0, hears bob come online on node 1 and go
    /// offline, and node 0's member lists say where he is.
    func testPresenceOnOneNodeReachesAMemberOnAnother() async throws {
        try await withCluster(nodes: 2) { nodes in
            let ann = try await nodes[0].account("ann")
            let bob = try await nodes[0].account("bob")
            let chat = try await nodes[0].chat("general", members: ["ann", "bob"])
            func bobOnline() async throws -> Bool? {
                try await withClient { client in
                    let request = CoAPMessage.request(.post, path: "/v1/chats/members", query: ["t=\(ann.token)"], payload: ChatMembersRequest(chatID: chat).serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
                    let answer = try await client.request(request, to: nodes[0].peer)
                    return try ChatMembers(serializedBytes: answer.payload).members.first { $0.userID == bob.userID }?.online
                }
            }
            async let heard = PushTests.run(nodes[0], [.hello(Hello(token: ann.token, have: [], clientName: "websockets"))], listen: 12)
            try await Task.sleep(for: .seconds(1))
            async let bobSession = PushTests.run(nodes[1], [.hello(Hello(token: bob.token, have: [], clientName: "websockets"))], hold: 6)
            try await Task.sleep(for: .seconds(3))
            let whileConnected = try await bobOnline()
            XCTAssertEqual(whileConnected, true, "node 0 knows bob is online on node 1")
            _ = try await bobSession
            let frames = try await heard.compactMap(PushTests.serverFrame).compactMap { frame -> Presence? in
                if case .push(.presence(let presence)) = frame { presence } else { nil }
            }
            XCTAssertTrue(frames.contains { $0.onlineUserIDs.contains(bob.userID) }, "\(frames)")
            XCTAssertTrue(frames.contains { $0.offlineUserIDs.contains(bob.userID) }, "\(frames)")
            let afterwards = try await bobOnline()
            XCTAssertEqual(afterwards, false)
        }
    }

    /// A device whose session begins on another node (it reconnected there) has its old
    /// session closed, saying why, and keeps the new one; what is sent afterwards reaches it.
    func testADeviceThatMovesToAnotherNodeHasItsOldSessionClosed() async throws {
        try await withCluster(nodes: 2) { nodes in
            let ann = try await nodes[0].account("ann")
            let chat = try await nodes[0].chat("general", members: ["ann"])
            let hello = ClientFrame.hello(Hello(token: ann.token, have: [], clientName: "witness"))
            let old = try await PushWitness(pushPort: nodes[0].pushPort, frames: [hello])
            try await Task.sleep(for: .milliseconds(500))
            let new = try await PushWitness(pushPort: nodes[1].pushPort, frames: [hello])
            let oldSession = await old.finish(awaitingClose: true)
            XCTAssertEqual(oldSession.ending, "closed 1001 session moved to another node")
            try await withClient { client in
                let response = try await client.send(SendMessage(clientMessageID: "after", chatID: chat, text: "to the new session", clientSentAtMs: 0), token: ann.token, to: nodes[0].peer)
                XCTAssertEqual(response.code, .created)
            }
            try await Task.sleep(for: .seconds(1))
            let newSession = await new.finish()
            XCTAssertEqual(newSession.ending, "end", "the newer session stays open")
            XCTAssertEqual(newSession.messages.map(\.clientMessageID), ["after"], "sent through the old node, pushed by the new one")
        }
    }

    /// A sender connected to one node gets the delivery receipts of acknowledgements stored by
    /// another node: every message is committed by one node, pushed and acknowledged on the
    /// other, and receipted back on the first.
    func testDeliveryReceiptsReachASenderConnectedToAnotherNode() async throws {
        try await withCluster(nodes: 2) { nodes in
            let ann = try await nodes[0].account("ann")
            let bob = try await nodes[0].account("bob")
            let chat = try await nodes[0].chat("general", members: ["ann", "bob"])
            let annFleet = try PushFleet(pushPort: nodes[0].pushPort, devices: [("ann", ann.token)], seed: 1, disconnectRate: 0)
            defer { annFleet.stop() }
            let bobFleet = try PushFleet(pushPort: nodes[1].pushPort, devices: [("bob", bob.token)], seed: 2, disconnectRate: 0)
            defer { bobFleet.stop() }
            try await annFleet.waitUntilReady()
            try await bobFleet.waitUntilReady()
            try await withClient { client in
                // Each sends through the node the other is connected to.
                for (index, sender) in [(1, ann), (2, ann), (3, bob), (4, ann)] {
                    let node = sender.userID == ann.userID ? nodes[1] : nodes[0]
                    let response = try await client.send(SendMessage(clientMessageID: "m-\(index)", chatID: chat, text: "message \(index)", clientSentAtMs: 0), token: sender.token, to: node.peer)
                    XCTAssertEqual(response.code, .created)
                }
            }
            try await Task.sleep(for: .seconds(2))  // acknowledgements stored, news heard, receipts pushed
            let annHolds = try await annFleet.finish(["ann": [chat: 4]])
            let bobHolds = try await bobFleet.finish(["bob": [chat: 4]])
            XCTAssertFalse(annHolds.timedOut || bobHolds.timedOut, String(annFleet.errorText.suffix(1000)) + String(bobFleet.errorText.suffix(1000)))
            XCTAssertEqual(annHolds.devices["ann"]?.chats[chat]?.map(\.clientMessageID), ["m-1", "m-2", "m-3", "m-4"])
            XCTAssertEqual(bobHolds.devices["bob"]?.chats[chat]?.map(\.clientMessageID), ["m-1", "m-2", "m-3", "m-4"])
            XCTAssertEqual(annHolds.devices["ann"]?.receipts.map(\.3).sorted(), ["m-1", "m-2", "m-4"], "bob's node acknowledged; ann's node receipted")
            XCTAssertEqual(bobHolds.devices["bob"]?.receipts.map(\.3), ["m-3"])
        }
    }

    /// A device's own message committed by another node comes back to it as its own: the
    /// news keeps the sender's device (`ClusterNode.heard`), so the push needs no
    /// acknowledgement. With a window of one push, a device that acknowledges nothing still
    /// gets every message it sent.
    func testOwnMessagesCommittedByAnotherNodeComeBackWithoutHoldingTheWindow() async throws {
        let settings = try ServerProcess.configFile(["maxUnackedPerChat": 1])
        defer { try? FileManager.default.removeItem(atPath: settings) }
        try await withCluster(nodes: 2, arguments: ["--config", settings]) { nodes in
            let ann = try await nodes[0].account("ann")
            let chat = try await nodes[0].chat("general", members: ["ann"])
            let witness = try await PushWitness(pushPort: nodes[0].pushPort, frames: [.hello(Hello(token: ann.token, have: [], clientName: "witness"))])
            try await withClient { client in
                for index in 1...3 {
                    let response = try await client.send(SendMessage(clientMessageID: "own-\(index)", chatID: chat, text: "message \(index)", clientSentAtMs: 0), token: ann.token, to: nodes[1].peer)
                    XCTAssertEqual(response.code, .created)
                }
            }
            // Committed on node 1, heard and pushed by node 0; within the 10 s acknowledgement
            // timeout, after which a wrongly held push would be resent.
            await witness.waitForMessages(3, timeout: .seconds(8))
            let session = await witness.finish()
            XCTAssertEqual(session.messages.map(\.clientMessageID), ["own-1", "own-2", "own-3"], "none waits for an acknowledgement of the one before")
        }
    }

    /// A commit whose notification never came (its node died between the two, or the listening
    /// connection was down): the repair sweep still delivers it, within a few seconds.
    func testAMessageCommittedWithoutANotificationStillReachesTheDevices() async throws {
        try await withCluster(nodes: 1) { nodes in
            let ann = try await nodes[0].account("ann")
            let chat = try await nodes[0].chat("general", members: ["ann"])
            let witness = try await PushWitness(pushPort: nodes[0].pushPort, frames: [.hello(Hello(token: ann.token, have: [], clientName: "witness"))])
            // Committed straight into the database, with no NOTIFY: what a node that died after
            // its commit leaves behind.
            let outcome = try TestPostgres.psql(nodes[0].postgres!, """
                SELECT outcome FROM courier_store_batch(ARRAY[\(chat)]::BIGINT[], ARRAY[0]::BIGINT[], ARRAY[\(ann.userID)]::BIGINT[],
                    ARRAY[\(ann.deviceID)]::BIGINT[], ARRAY['silent'], ARRAY['no one announced me'], ARRAY[0]::BIGINT[], ARRAY[0]::BIGINT[], 0)
                """)
            XCTAssertEqual(outcome.trimmingCharacters(in: .whitespacesAndNewlines), "stored")
            try await Task.sleep(for: .seconds(5))  // two repair intervals and a little
            let session = await witness.finish()
            XCTAssertEqual(session.messages.map(\.clientMessageID), ["silent"])
        }
    }

    /// A node on a database without Courier's schema, or one it cannot reach, exits at start
    /// with a message that says what to do.
    func testANodeRefusesAnUnmigratedOrUnreachableDatabase() async throws {
        let empty = try TestPostgres.newDatabase()
        let node = try await ServerProcess()
        defer { node.remove() }
        node.postgres = empty
        do {
            try await node.start()
            XCTFail("a node started on a database with no schema")
        } catch {
            XCTAssertTrue("\(error)".contains("courier-server migrate"), "\(error)")
        }
        var unreachable = URLComponents(string: empty)!
        unreachable.port = try await freeTCPPort()
        node.postgres = unreachable.string!
        do {
            try await node.start()
            XCTFail("a node started without its database")
        } catch {
            XCTAssertTrue("\(error)".contains("cannot reach PostgreSQL at 127.0.0.1:\(unreachable.port!)"), "\(error)")
        }
    }
}
