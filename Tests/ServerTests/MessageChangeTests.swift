import CoAP
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// Edits and deletes over the wire, from clients no one here wrote: aiocoap sends them, Python's
/// websockets receives them as pushes; only the sender may change a message, and a change
/// retried every way a device can retry is carried out once.
final class MessageChangeTests: XCTestCase {
    /// aiocoap-client's POST of `message` with `token`: its exit status, answer and diagnostics.
    private func post(_ server: ServerProcess, _ message: SendMessage, token: String) async throws -> (status: Int32, body: Data, stderr: String) {
        let client = try ExternalProgram.locate("aiocoap-client", hint: "pip install aiocoap (scripts/install-deps)")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("courier-change-\(UUID().uuidString).bin")
        try Data(message.serializedBytes()).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try await ExternalProgram.run(client, ["-m", "POST", "--content-format", "65001", "--payload", "@\(file.path)", "\(server.uri)/v1/msg?t=\(token)"])
        return (output.status, output.stdout, output.stderr + output.text)
    }

    /// The chat's entries as the admin command prints them: sequence, text, change, deleted.
    private func entries(_ server: ServerProcess, _ chat: String) async throws -> [String] {
        let object = try await server.admin(["chat", "history", chat])
        return (object["messages"] as! [[String: Any]]).map { entry in
            let change = (entry["change"] as? String).map { " (\($0))" } ?? ""
            let deleted = (entry["deleted"] as? Bool) == true ? " deleted" : ""
            return "#\(entry["sequence"]!) \(entry["text"] as! String)\(change)\(deleted)"
        }
    }

    private func waitForEntries(_ server: ServerProcess, _ chat: String, count: Int) async throws -> [String] {
        let deadline = Date().addingTimeInterval(30)
        while true {
            let found = try await entries(server, chat)
            if found.count >= count || Date() > deadline { return found }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func testAnEditOrDeleteByAnotherUserIsForbiddenAndChangesNothingAndTheSendersChangeReachesEveryDevice() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let chat = try await server.chat("general", members: ["alice", "bob"])
            let sent = try await post(server, SendMessage(clientMessageID: "a-1", chatID: chat, text: "lunch at noon", clientSentAtMs: 1), token: alice.token)
            XCTAssertEqual(sent.status, 0, sent.stderr)
            _ = try await waitForEntries(server, "general", count: 1)

            let bobEdits = try await post(server, SendMessage(clientMessageID: "b-1", chatID: chat, text: "lunch cancelled", clientSentAtMs: 2, change: .edit(sequence: 1)), token: bob.token)
            XCTAssertTrue(bobEdits.stderr.contains("4.03"), bobEdits.stderr)
            let bobDeletes = try await post(server, SendMessage(clientMessageID: "b-2", chatID: chat, text: "", clientSentAtMs: 2, change: .delete(sequence: 1)), token: bob.token)
            XCTAssertTrue(bobDeletes.stderr.contains("4.03"), bobDeletes.stderr)
            let nothingThere = try await post(server, SendMessage(clientMessageID: "a-2", chatID: chat, text: "x", clientSentAtMs: 2, change: .edit(sequence: 9)), token: alice.token)
            XCTAssertTrue(nothingThere.stderr.contains("4.04"), nothingThere.stderr)
            let deleteWithText = try await post(server, SendMessage(clientMessageID: "a-3", chatID: chat, text: "why", clientSentAtMs: 2, change: .delete(sequence: 1)), token: alice.token)
            XCTAssertTrue(deleteWithText.stderr.contains("4.00"), deleteWithText.stderr)
            try await Task.sleep(for: .milliseconds(300))
            let untouched = try await entries(server, "general")
            XCTAssertEqual(untouched, ["#1 lunch at noon"], "refused changes change nothing and take no number")

            let aliceEdits = try await post(server, SendMessage(clientMessageID: "a-4", chatID: chat, text: "lunch at one", clientSentAtMs: 3, change: .edit(sequence: 1)), token: alice.token)
            XCTAssertEqual(aliceEdits.status, 0, aliceEdits.stderr)
            let edited = try SendResult(serializedBytes: aliceEdits.body)
            XCTAssertEqual(edited.clientMessageID, "a-4")
            _ = try await post(server, SendMessage(clientMessageID: "a-5", chatID: chat, text: "typo", clientSentAtMs: 4), token: alice.token)
            _ = try await waitForEntries(server, "general", count: 3)
            let aliceDeletes = try await post(server, SendMessage(clientMessageID: "a-6", chatID: chat, text: "", clientSentAtMs: 5, change: .delete(sequence: 3)), token: alice.token)
            XCTAssertEqual(aliceDeletes.status, 0, aliceDeletes.stderr)
            let after = try await waitForEntries(server, "general", count: 4)
            XCTAssertEqual(after, ["#1 lunch at one", "#2 lunch at one (edit 1)", "#3  deleted", "#4  (delete 3)"])

            // Bob's device, on Python's websockets, gets every entry in order: the message as it
            // is now, and the changes, which it can apply or skip.
            let lines = try await PushTests.run(server, [.hello(Hello(token: bob.token, have: [], clientName: "websockets"))], listen: 2)
            let pushed = lines.compactMap(PushTests.serverFrame).flatMap { frame -> [ChatMessage] in
                switch frame {
                case .push(.message(let message)): [message]
                case .sync(let response): response.messages
                default: []
                }
            }
            XCTAssertEqual(pushed.map(\.chatSequence), [1, 2, 3, 4], "\(lines)")
            XCTAssertEqual(pushed.map(\.change), [nil, .edit(sequence: 1), nil, .delete(sequence: 3)])
            XCTAssertEqual(pushed.first?.text, "lunch at one")
            XCTAssertNotEqual(pushed.first?.editedAtMs, 0, "marked as edited")
            XCTAssertEqual(pushed.map(\.deleted), [false, false, true, false])

            let searched = try await server.admin(["search", "noon"])
            XCTAssertEqual((searched["hits"] as? [Any])?.count ?? -1, 0, "the old text is not found: \(searched)")
        }
    }

    func testAnEditSentFiveWaysIsAppliedOnce() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            let chat = try await server.chat("general", members: ["alice"])
            _ = try await post(server, SendMessage(clientMessageID: "first", chatID: chat, text: "helo", clientSentAtMs: 1), token: alice.token)
            _ = try await waitForEntries(server, "general", count: 1)
            let edit = SendMessage(clientMessageID: "edit-\(UUID().uuidString)", chatID: chat, text: "hello", clientSentAtMs: 2, change: .edit(sequence: 1))
            var serverIDs: [UInt64] = []

            // 1-2: two new exchanges from aiocoap.
            for _ in 0..<2 {
                let answer = try await post(server, edit, token: alice.token)
                XCTAssertEqual(answer.status, 0, answer.stderr)
                serverIDs.append(try SendResult(serializedBytes: answer.body).serverMessageID)
            }
            // 3: a retry from our client after the chat stored it; it learns the sequence.
            _ = try await waitForEntries(server, "general", count: 2)
            try await withClient { client in
                let response = try await client.send(edit, token: alice.token, to: server.peer)
                XCTAssertEqual(response.code, .created)
                let result = try SendResult(serializedBytes: response.payload)
                XCTAssertEqual(result.chatSequence, 2)
                serverIDs.append(result.serverMessageID)
            }
            // 4-5: one datagram delivered twice (its ACK lost): the cached answer, twice.
            var datagram = CoAPMessage.request(.post, path: "/v1/msg", query: ["t=\(alice.token)"], payload: edit.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
            datagram.messageID = 0x4343
            datagram.token = [9, 8, 7, 6]
            let replies = try await sendRaw(datagram.encode(), times: 2, to: server.coapPort)
            XCTAssertEqual(replies.count, 2)
            for reply in replies {
                let decoded = try CoAPMessage.decode(reply)
                XCTAssertEqual(decoded.code, .created)
                serverIDs.append(try SendResult(serializedBytes: decoded.payload).serverMessageID)
            }
            XCTAssertEqual(Set(serverIDs).count, 1, "every answer names the same entry: \(serverIDs)")

            // The same id for another change is a reuse: 4.09, and nothing more is stored.
            var reused = edit
            reused.text = "hallo"
            let conflict = try await post(server, reused, token: alice.token)
            XCTAssertTrue(conflict.stderr.contains("4.09"), conflict.stderr)
            try await Task.sleep(for: .milliseconds(500))
            let entries = try await entries(server, "general")
            XCTAssertEqual(entries, ["#1 hello", "#2 hello (edit 1)"], "applied once")
        }
    }
}
