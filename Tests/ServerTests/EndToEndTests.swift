import CoAP
import CourierProtocol
import Foundation
import NIOCore
import TestSupport
import XCTest

/// The real `courier-server` binary, provisioned with its admin subcommands and driven by real
/// CoAP clients: libcoap's coap-client-notls, aiocoap, and our own endpoint.
final class EndToEndTests: XCTestCase {
    func sendFile(_ message: SendMessage) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("courier-send-\(UUID().uuidString).bin").path
        try Data(message.serializedBytes()).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testLibcoapAndAiocoapPostAProtobufMessageThatIsStoredOnceWithItsSequence() async throws {
        let coapClient = try ExternalProgram.locate("coap-client-notls", hint: "apt-get install libcoap3-bin (scripts/install-deps)")
        let aiocoapClient = try ExternalProgram.locate("aiocoap-client", hint: "pip install aiocoap (scripts/install-deps)")
        try await withServer { server in
            let alice = try await server.account("alice")
            _ = try await server.account("bob")
            let chat = try await server.chat("general", members: ["alice", "bob"])

            let fromLibcoap = try sendFile(SendMessage(clientMessageID: "libcoap-1", chatID: chat, text: "hello from libcoap", clientSentAtMs: 1_700_000_000_000))
            let libcoap = try await ExternalProgram.run(coapClient, ["-m", "post", "-t", "65001", "-f", fromLibcoap, "\(server.uri)/v1/msg?t=\(alice.token)"])
            XCTAssertEqual(libcoap.status, 0, libcoap.stderr)
            let libcoapResult = try SendResult(serializedBytes: libcoap.stdout.dropLast())  // the tool adds a newline
            XCTAssertEqual(libcoapResult.clientMessageID, "libcoap-1")
            XCTAssertEqual(libcoapResult.chatID, chat)
            XCTAssertNotEqual(libcoapResult.serverMessageID, 0)

            let fromAiocoap = try sendFile(SendMessage(clientMessageID: "aiocoap-1", chatID: chat, text: "hello from aiocoap", clientSentAtMs: 1_700_000_000_001))
            let aiocoap = try await ExternalProgram.run(aiocoapClient, ["-m", "POST", "--content-format", "65001", "--payload", "@\(fromAiocoap)", "\(server.uri)/v1/msg?t=\(alice.token)"])
            XCTAssertEqual(aiocoap.status, 0, aiocoap.stderr)
            let aiocoapResult = try SendResult(serializedBytes: aiocoap.stdout)
            XCTAssertEqual(aiocoapResult.clientMessageID, "aiocoap-1")
            XCTAssertGreaterThan(aiocoapResult.serverMessageID, libcoapResult.serverMessageID, "ids are time-ordered")

            let history = try await server.waitForHistory("general", count: 2)
            XCTAssertEqual(history.map(\.sequence), [1, 2])
            XCTAssertEqual(history.map(\.clientMessageID), ["libcoap-1", "aiocoap-1"])
            XCTAssertEqual(history.map(\.text), ["hello from libcoap", "hello from aiocoap"])
            XCTAssertEqual(Set(history.map(\.device)), [alice.deviceID], "the sender is the token's device")
        }
    }

    func testOneMessageSentFiveWaysIsStoredOnceAndAnsweredAlike() async throws {
        let coapClient = try ExternalProgram.locate("coap-client-notls", hint: "apt-get install libcoap3-bin (scripts/install-deps)")
        try await withServer { server in
            let alice = try await server.account("alice")
            let chat = try await server.chat("general", members: ["alice"])
            let message = SendMessage(clientMessageID: "once-\(UUID().uuidString)", chatID: chat, text: "only once", clientSentAtMs: 1)
            var serverIDs: [UInt64] = []

            // 1-2: two new exchanges from libcoap.
            let file = try sendFile(message)
            for _ in 0..<2 {
                let output = try await ExternalProgram.run(coapClient, ["-m", "post", "-t", "65001", "-f", file, "\(server.uri)/v1/msg?t=\(alice.token)"])
                serverIDs.append(try SendResult(serializedBytes: output.stdout.dropLast()).serverMessageID)
            }
            // 3: a retry from our client (new Message ID, new token), after the chat stored it.
            _ = try await server.waitForHistory("general", count: 1)
            try await withClient { client in
                let response = try await client.send(message, token: alice.token, to: server.peer)
                XCTAssertEqual(response.code, .created)
                let result = try SendResult(serializedBytes: response.payload)
                XCTAssertEqual(result.chatSequence, 1, "a retry of a stored message learns its sequence")
                serverIDs.append(result.serverMessageID)
            }
            // 4-5: one CoAP datagram delivered again after its answer (the ACK was lost, so the
            // client retransmits with the same Message ID).
            var datagram = CoAPMessage.request(.post, path: "/v1/msg", query: ["t=\(alice.token)"], payload: message.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
            datagram.messageID = 0x4242
            datagram.token = [1, 2, 3, 4]
            let replies = try await sendRaw(datagram.encode(), times: 2, to: server.coapPort)
            XCTAssertEqual(replies.count, 2, "the duplicate is answered with the cached reply")
            for reply in replies {
                let decoded = try CoAPMessage.decode(reply)
                XCTAssertEqual(decoded.code, .created)
                serverIDs.append(try SendResult(serializedBytes: decoded.payload).serverMessageID)
            }

            XCTAssertEqual(Set(serverIDs).count, 1, "every answer names the same server message id: \(serverIDs)")
            try await Task.sleep(for: .milliseconds(500))
            let history = try await server.history("general")
            XCTAssertEqual(history.map(\.clientMessageID), [message.clientMessageID], "stored exactly once")
        }
    }

    func testTwentyConcurrentSendersGetGaplessSequencesAndKeepTheirOwnOrder() async throws {
        let senders = 20
        let perSender = 25
        try await withServer { server in
            var accounts: [ServerProcess.Account] = []
            for index in 0..<senders { accounts.append(try await server.account("sender\(index)")) }
            let chat = try await server.chat("busy", members: (0..<senders).map { "sender\($0)" })
            let peer = server.peer
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, account) in accounts.enumerated() {
                    group.addTask {
                        try await withClient { client in
                            for number in 0..<perSender {
                                let message = SendMessage(clientMessageID: "s\(index)-\(number)", chatID: chat, text: "sender \(index) message \(number)", clientSentAtMs: 0)
                                let response = try await client.send(message, token: account.token, to: peer)
                                XCTAssertEqual(response.code, .created, "s\(index)-\(number)")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let history = try await server.waitForHistory("busy", count: senders * perSender)
            XCTAssertEqual(history.map(\.sequence), (1...UInt64(senders * perSender)).map { $0 }, "1..N, no gap, no repeat")
            XCTAssertEqual(Set(history.map(\.clientMessageID)).count, senders * perSender, "each message once")
            for (index, account) in accounts.enumerated() {
                let own = history.filter { $0.device == account.deviceID }.map(\.clientMessageID)
                XCTAssertEqual(own, (0..<perSender).map { "s\(index)-\($0)" }, "sender \(index)'s messages keep their order")
            }
        }
    }

    func testKillNineDuringABurstLosesNoAcknowledgedMessageAndReplaysNothingTwice() async throws {
        let cycles = Int(ProcessInfo.processInfo.environment["COURIER_SERVER_KILL_CYCLES"] ?? "") ?? 3
        let server = try await ServerProcess()
        defer { server.remove() }
        do {
            try await server.start()
            var accounts: [ServerProcess.Account] = []
            for index in 0..<6 { accounts.append(try await server.account("writer\(index)")) }
            _ = try await server.chat("burst", members: (0..<6).map { "writer\($0)" })
            let chat = try await server.admin(["chat", "list"])["chats"].flatMap { ($0 as? [[String: Any]])?.first?["id"] as? NSNumber }!.uint64Value
            let acknowledged = Acknowledged()
            var next = 0
            for cycle in 0..<cycles {
                if cycle > 0 { try await server.start() }
                let peer = server.peer
                let base = next
                let writers = accounts
                let burst = Task {
                    await withTaskGroup(of: Void.self) { group in
                        for (index, account) in writers.enumerated() {
                            let first = base + index * 100_000
                            group.addTask {
                                guard let client = try? await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false) else { return }
                                for number in first..<first + 100_000 {
                                    let message = SendMessage(clientMessageID: "w\(index)-\(number)", chatID: chat, text: "burst \(number)", clientSentAtMs: 0)
                                    guard let response = try? await client.send(message, token: account.token, to: peer) else { break }
                                    if response.code == .created { acknowledged.add(message.clientMessageID) }
                                    if Task.isCancelled { break }
                                }
                                await client.close()
                            }
                        }
                    }
                }
                try await Task.sleep(for: .milliseconds(Int.random(in: 700...1500)))
                await server.kill9()
                burst.cancel()
                await burst.value
                next += 1_000_000
            }
            try await server.start()
            let expected = acknowledged.all
            XCTAssertGreaterThan(expected.count, 50, "the burst must have been acknowledged before the kills")
            let history = try await server.waitForHistory("burst", count: expected.count, timeout: 60)
            let stored = history.map(\.clientMessageID)
            XCTAssertEqual(Set(stored).count, stored.count, "no message stored twice (replays were no-ops)")
            XCTAssertTrue(expected.isSubset(of: Set(stored)), "lost after kill -9: \(expected.subtracting(stored).sorted().prefix(10))")
            XCTAssertEqual(history.map(\.sequence), (1...UInt64(history.count)).map { $0 }, "sequences stay gapless across crashes")
            let resumed = server.serverLog().components(separatedBy: "\n").filter { $0.contains("consumer resumes") && !$0.contains("offset=0") }
            XCTAssertFalse(resumed.isEmpty, "after a restart the consumers start from their committed offsets, not from 0")
            print("kill -9: \(cycles) cycles, \(expected.count) acknowledged, \(stored.count) stored, 0 lost, 0 duplicated")
            await server.kill9()
        } catch {
            await server.kill9()
            throw ServerTestError("\(error)\n--- server log ---\n\(server.serverLog().suffix(3000))")
        }
    }

    func testSearchFindsWordsOnlyInTheUsersChats() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let shared = try await server.chat("shared", members: ["alice", "bob"])
            let bobsOwn = try await server.chat("bobs-notes", members: ["bob"])
            try await withClient { client in
                _ = try await client.send(SendMessage(clientMessageID: "a", chatID: shared, text: "lunch at the harbour", clientSentAtMs: 0), token: alice.token, to: server.peer)
                _ = try await client.send(SendMessage(clientMessageID: "b", chatID: bobsOwn, text: "harbour surprise party for alice", clientSentAtMs: 0), token: bob.token, to: server.peer)
            }
            _ = try await server.waitForHistory("bobs-notes", count: 1)
            _ = try await server.waitForHistory("shared", count: 1)
            let forAlice = try await server.admin(["search", "harbour", "--user", "alice"])["hits"] as! [[String: Any]]
            XCTAssertEqual(forAlice.map { $0["chat"] as! String }, ["shared"], "alice does not see bob's own chat")
            let forBob = try await server.admin(["search", "harbour", "--user", "bob"])["hits"] as! [[String: Any]]
            XCTAssertEqual(Set(forBob.map { $0["chat"] as! String }), ["shared", "bobs-notes"])
            let substring = try await server.admin(["search", "harb"])["hits"] as! [[String: Any]]
            XCTAssertTrue(substring.isEmpty, "words, not substrings")
        }
    }
}

/// Client message ids the server acknowledged, from many tasks.
final class Acknowledged: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: Set<String> = []
    func add(_ id: String) { lock.withLock { _ = ids.insert(id) } }
    var all: Set<String> { lock.withLock { ids } }
}

/// Sends `datagram` `times` times from one UDP socket, each time after the reply to the one
/// before (up to 2 s), and returns the replies.
func sendRaw(_ datagram: [UInt8], times: Int, to port: Int) async throws -> [[UInt8]] {
    let script = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2.0)
        data = bytes.fromhex(sys.argv[1])
        replies = []
        for _ in range(int(sys.argv[2])):
            s.sendto(data, ("127.0.0.1", int(sys.argv[3])))
            try:
                replies.append(s.recv(65536).hex())
            except socket.timeout:
                pass
        print("\\n".join(replies))
        """
    let python = try ExternalProgram.locate("python3", hint: "apt-get install python3")
    let output = try await ExternalProgram.run(python, ["-c", script, datagram.map { String(format: "%02x", $0) }.joined(), "\(times)", "\(port)"])
    return output.text.split(separator: "\n").map { line in
        stride(from: 0, to: line.count, by: 2).map { UInt8(line.dropFirst($0).prefix(2), radix: 16)! }
    }
}
