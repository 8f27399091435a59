import CoAP
import CourierProtocol
import Foundation
import NIOCore
import TestSupport
import XCTest

/// Guarantee 8 against the real server: a missing, forged, expired, revoked or another user's
/// credential gets its code on every door (CoAP resources and the push port), and nothing is
/// stored, pushed or shown to anyone who does not belong.
final class AccessReliabilityTests: ReliabilityTestCase {
    /// Token answers are cached this long here (and revocations polled as often), so a
    /// revocation is seen quickly.
    static let cacheSeconds = 1

    func testEveryWrongCredentialIsRefusedAndNothingIsStoredOrPushed() async throws {
        fault = "missing, forged, expired, revoked and other users' tokens; other users' chats"
        let configFile = FileManager.default.temporaryDirectory.appendingPathComponent("courier-access-\(UUID().uuidString).json").path
        try Data(#"{"tokenCacheSeconds": \#(Self.cacheSeconds)}"#.utf8).write(to: URL(fileURLWithPath: configFile))
        defer { try? FileManager.default.removeItem(atPath: configFile) }
        try await withServer(["--config", configFile]) { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let mallory = try await server.account("mallory")
            let general = try await server.chat("general", members: ["alice", "bob"])
            _ = try await server.chat("mallorys", members: ["mallory"])
            let issue = { () async throws -> String in try await server.admin(["token", "issue", "alice", "phone", "--expires-days", "1"])["token"] as! String }
            let expiredUnused = try await issue()
            let expiredAfterUse = try await issue()
            let revoked = try await issue()
            let witness = try await PushWitness(pushPort: server.pushPort, frames: [.hello(Hello(token: bob.token, have: [], clientName: "witness"))])

            // Set before first use: nothing in the server changes a token's expiry after it is
            // issued, so the checker keeps the expiry it read with the token.
            let expiresIn = 3
            try await Self.expire([expiredAfterUse], in: server, inSeconds: expiresIn)
            let expiry = ContinuousClock.now + .seconds(expiresIn)
            try await withClient { client in
                func call(_ method: CoAPCode, _ path: String, _ query: [String], _ body: [UInt8] = []) async throws -> CoAPMessage {
                    try await client.request(.request(method, path: path, query: query, payload: body, contentFormat: CoAPContentFormat.protobuf), to: server.peer)
                }
                // Something in the chat worth stealing, and the two tokens in use before they go bad.
                let seed = try await client.send(SendMessage(clientMessageID: "seed", chatID: general, text: "the secret", clientSentAtMs: 0), token: alice.token, to: server.peer)
                XCTAssertEqual(seed.code, .created)
                _ = try await server.waitForHistory("general", count: 1)
                for token in [expiredAfterUse, revoked] {
                    let warm = try await call(.get, "/v1/chats", ["t=\(token)"])
                    XCTAssertEqual(warm.code, .content, "a fresh token works before it goes bad")
                }
                try await Self.expire([expiredUnused], in: server, inSeconds: 0)
                _ = try await server.admin(["token", "revoke", revoked])
                try await Task.sleep(until: max(expiry, ContinuousClock.now + .seconds(Self.cacheSeconds)) + .milliseconds(300))

                var flipped = Array(alice.token)
                flipped[flipped.count - 1] = flipped.last == "A" ? "B" : "A"
                let badTokens: [(String, [String])] = [
                    ("no token", []),
                    ("empty token", ["t="]),
                    ("forged token", ["t=AAAAAAAAAAAAAAAAAAAAAA"]),
                    ("alice's token with one character changed", ["t=\(String(flipped))"]),
                    ("expired token, never used", ["t=\(expiredUnused)"]),
                    ("token that expired after use", ["t=\(expiredAfterUse)"]),
                    ("revoked token", ["t=\(revoked)"]),
                    ("a forged token first, alice's second", ["t=AAAAAAAAAAAAAAAAAAAAAA", "t=\(alice.token)"]),
                    ("alice's token under another name", ["token=\(alice.token)"]),
                ]
                let send = SendMessage(clientMessageID: "stolen", chatID: general, text: "not from alice", clientSentAtMs: 0).serializedBytes()
                let doors: [(String, CoAPCode, String, [UInt8])] = [
                    ("send", .post, "/v1/msg", send),
                    ("sync", .post, "/v1/sync", SyncRequest(have: [ChatCursor(chatID: general, sequence: 0)]).serializedBytes()),
                    ("history", .post, "/v1/history", HistoryRequest(chatID: general).serializedBytes()),
                    ("chat list", .get, "/v1/chats", []),
                    ("create chat", .post, "/v1/chats", CreateChat(name: "intruders", memberNames: []).serializedBytes()),
                ]
                var cases = 0
                for (what, query) in badTokens {
                    for (door, method, path, body) in doors {
                        let answer = try await call(method, path, query, body)
                        XCTAssertEqual(answer.code, .unauthorized, "\(what) on \(door)")
                        XCTAssertEqual((try? WireError(serializedBytes: answer.payload))?.code, .unauthorized, "\(what) on \(door): an Error body")
                        cases += 1
                    }
                }

                // A good token, but a chat its user is not in, or no chat at all.
                let stranger = ["t=\(mallory.token)"]
                let refusals: [(String, CoAPMessage, CoAPCode, WireErrorCode)] = [
                    ("send into a chat the user is not in", try await call(.post, "/v1/msg", stranger, send), .forbidden, .forbidden),
                    ("send into a chat that does not exist", try await call(.post, "/v1/msg", stranger, SendMessage(clientMessageID: "x", chatID: 987_654, text: "x", clientSentAtMs: 0).serializedBytes()), .notFound, .notFound),
                    ("history of another user's chat", try await call(.post, "/v1/history", stranger, HistoryRequest(chatID: general).serializedBytes()), .forbidden, .forbidden),
                    ("search in another user's chat", try await call(.post, "/v1/search", stranger, SearchRequest(words: "secret", chatID: general).serializedBytes()), .forbidden, .forbidden),
                    ("invite oneself into another user's chat", try await call(.post, "/v1/chats/invite", stranger, InviteToChat(chatID: general, userName: "mallory").serializedBytes()), .forbidden, .forbidden),
                ]
                for (what, answer, code, wire) in refusals {
                    XCTAssertEqual(answer.code, code, what)
                    XCTAssertEqual((try? WireError(serializedBytes: answer.payload))?.code, wire, what)
                    cases += 1
                }
                // Asking is answered, but with nothing of the chat.
                let sync = try await call(.post, "/v1/sync", stranger, SyncRequest(have: [ChatCursor(chatID: general, sequence: 0)]).serializedBytes())
                XCTAssertEqual(sync.code, .content)
                XCTAssertEqual(try SyncResponse(serializedBytes: sync.payload).messages.filter { $0.chatID == general }.count, 0, "sync never answers another user's chat")
                let search = try await call(.post, "/v1/search", stranger, SearchRequest(words: "secret").serializedBytes())
                XCTAssertTrue(try SearchResponse(serializedBytes: search.payload).hits.isEmpty, "search never finds another user's messages")
                let list = try await call(.get, "/v1/chats", stranger)
                XCTAssertFalse(try ChatList(serializedBytes: list.payload).chats.contains { $0.chatID == general }, "the chat list names only the user's chats")
                cases += 3

                // A token speaks only for its own device: bob's token sends as bob, whatever the body says.
                let asBob = try await client.send(SendMessage(clientMessageID: "by-bob", chatID: general, text: "hello", clientSentAtMs: 0), token: bob.token, to: server.peer)
                XCTAssertEqual(asBob.code, .created)
                let history = try await server.waitForHistory("general", count: 2)
                XCTAssertEqual(history.map(\.clientMessageID), ["seed", "by-bob"], "nothing but the two good messages was stored")
                XCTAssertEqual(history.map(\.device), [alice.deviceID, bob.deviceID], "each stored as its token's device")
                cases += 1

                // The push port: bad tokens are closed with 1008 and get no data.
                var pushCases: [(String, PushWitness.Record)] = []
                for (what, token) in [("forged", "AAAAAAAAAAAAAAAAAAAAAA"), ("expired", expiredUnused), ("expired after use", expiredAfterUse), ("revoked", revoked), ("empty", "")] {
                    let session = try await PushWitness(pushPort: server.pushPort, frames: [.hello(Hello(token: token, have: [ChatCursor(chatID: general, sequence: 0)], clientName: "x"))])
                    pushCases.append(("push Hello with a \(what) token", await session.finish(awaitingClose: true)))
                }
                let byQuery = try await PushWitness(pushPort: server.pushPort, query: "?t=\(revoked)", frames: [.hello(Hello(token: "", have: [], clientName: "x"))])
                pushCases.append(("push upgrade with a revoked ?t=", await byQuery.finish(awaitingClose: true)))
                for (what, record) in pushCases {
                    XCTAssertEqual(record.ending, "closed 1008 bad token", what)
                    XCTAssertTrue(record.messages.isEmpty, "\(what): no data")
                    cases += 1
                }
                // Mallory's own session, asking for alice and bob's chat: a Welcome and nothing of it.
                let nosy = try await PushWitness(pushPort: server.pushPort, frames: [
                    .hello(Hello(token: mallory.token, have: [ChatCursor(chatID: general, sequence: 0)], clientName: "x")),
                    .sync(SyncRequest(have: [ChatCursor(chatID: general, sequence: 0)])),
                ])
                try await Task.sleep(for: .milliseconds(700))
                let seen = await nosy.finish()
                guard case .welcome? = seen.frames.first else { return XCTFail("mallory's own session opens: \(seen)") }
                XCTAssertTrue(seen.frames.contains { if case .sync = $0 { true } else { false } }, "the sync is answered")
                XCTAssertFalse(seen.frames.contains { frame in
                    switch frame {
                    case .push(.message(let message)): message.chatID == general
                    case .sync(let answer): answer.messages.contains { $0.chatID == general }
                    default: false
                    }
                }, "nothing of another user's chat is pushed or synced")
                cases += 2

                let pushed = await witness.finish()
                XCTAssertEqual(pushed.messages.map(\.clientMessageID), ["seed", "by-bob"], "a member was pushed the two good messages, once each")
                let count = try await server.messageCount()
                XCTAssertEqual(count, 2)
                figure = "\(cases) cases, each refused with its code (4.01 ×\(badTokens.count * doors.count), 4.03, 4.04, 1008 ×\(pushCases.count)); \(count) stored (the 2 good ones), nothing leaked"
            }
            XCTAssertTrue(server.isRunning)
        }
    }

    /// A captured datagram (a valid signed-in send) replayed from other addresses. The token is
    /// a bearer credential: whoever captured the datagram holds it and could send anything, so
    /// refusing the same bytes from a new address would protect nothing, and it would break a
    /// device whose address changed between a send and its retry (NAT rebinding, roaming). What
    /// must hold is effectively-once: the replay gets the first answer again (same server message
    /// id), and the message is never stored or pushed twice. A replay that changes the text is 4.09.
    func testReplayingACapturedDatagramFromAnotherAddressNeverStoresOrPushesTwice() async throws {
        let replays = level.pick(short: 6, full: 30, soak: 100)
        fault = "a captured signed-in send replayed \(replays) times from \(replays) other addresses"
        try await withServer { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let general = try await server.chat("general", members: ["alice", "bob"])
            let witness = try await PushWitness(pushPort: server.pushPort, frames: [.hello(Hello(token: bob.token, have: [], clientName: "witness"))])
            let message = SendMessage(clientMessageID: "captured-1", chatID: general, text: "pay 10 to bob", clientSentAtMs: 0)
            let captured = CoAPMessage.raw(.post, path: "/v1/msg", query: ["t=\(alice.token)"], payload: message.serializedBytes(), messageID: 0x5151, token: [1, 2, 3, 4]).encode()
            func result(_ replies: [[UInt8]]) -> (CoAPCode?, SendResult?) {
                let answer = replies.first.flatMap { try? CoAPMessage.decode($0) }
                return (answer?.code, answer.flatMap { try? SendResult(serializedBytes: $0.payload) })
            }
            let (firstReply, first) = try await withRawSocket { socket in
                let replies = try await socket.exchange(captured, with: server.peer)
                // The same bytes from the same address: the CoAP layer's duplicate, answered from its cache.
                let again = try await socket.exchange(captured, with: server.peer)
                XCTAssertEqual(again, replies, "a duplicate from the same endpoint gets the very same datagram")
                return (replies, result(replies).1)
            }
            XCTAssertEqual(result(firstReply).0, .created)
            guard let first else { return XCTFail("no SendResult") }
            for index in 0..<replays {
                // Another loopback address each time (and after the chat stored it, half of them).
                if index == replays / 2 { _ = try await server.waitForHistory("general", count: 1) }
                try await withRawSocket(host: "127.0.1.\(index + 1)") { socket in
                    let (code, replayed) = result(try await socket.exchange(captured, with: server.peer))
                    XCTAssertEqual(code, .created, "replay \(index)")
                    XCTAssertEqual(replayed?.serverMessageID, first.serverMessageID, "replay \(index): the first answer again")
                    if index >= replays / 2 { XCTAssertEqual(replayed?.chatSequence, 1, "replay \(index) after storing: its place in the chat") }
                }
            }
            // The captured datagram with its text changed: the same id for another message.
            var tampered = try CoAPMessage.decode(captured)
            tampered.payload = SendMessage(clientMessageID: "captured-1", chatID: general, text: "pay 1000 to mallory", clientSentAtMs: 0).serializedBytes()
            let conflict = try await withRawSocket(host: "127.0.1.250") { socket in
                try await socket.exchange(tampered.encode(), with: server.peer).first.flatMap { try? CoAPMessage.decode($0) }
            }
            XCTAssertEqual(conflict?.code, .conflict, "a tampered replay is refused")

            let history = try await server.waitForHistory("general", count: 1)
            try await Task.sleep(for: .seconds(1))
            let pushed = await witness.finish()
            let count = try await server.messageCount()
            XCTAssertEqual(history.map(\.text), ["pay 10 to bob"], "stored once, the first text")
            XCTAssertEqual(count, 1)
            XCTAssertEqual(pushed.messages.map(\.clientMessageID), ["captured-1"], "pushed once to the other member")
            figure = "\(replays) replays from other addresses: each 2.01 with the first server message id; tampered 4.09; \(count) stored, \(pushed.messages.count) pushed"
        }
    }

    /// Sets the tokens' expiry `inSeconds` from now, straight in the server's database (the admin
    /// command issues whole days only).
    static func expire(_ tokens: [String], in server: ServerProcess, inSeconds: Int) async throws {
        let script = """
            import hashlib, sqlite3, sys, time
            db = sqlite3.connect(sys.argv[1], timeout=10)
            at = int(time.time() * 1000) + int(sys.argv[2]) * 1000
            for token in sys.argv[3:]:
                changed = db.execute("UPDATE tokens SET expires_at_ms = ? WHERE hash = ?", (at, hashlib.sha256(token.encode()).digest())).rowcount
                assert changed == 1, token
            db.commit()
            """
        let python = try ExternalProgram.locate("python3", hint: "apt-get install python3")
        let output = try await ExternalProgram.run(python, ["-c", script, "\(server.dataDirectory)/courier.sqlite3", "\(inSeconds)"] + tokens)
        guard output.status == 0 else { throw ServerTestError("could not expire the tokens: \(output.stderr)") }
    }
}
