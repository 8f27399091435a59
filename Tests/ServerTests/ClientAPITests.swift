import CoAP
@testable import CourierActors
@testable import CourierCore
import CourierProtocol
@testable import CourierSQLite
import Foundation
import NIOCore
import TestSupport
import XCTest

/// The client API on the real binary, called with device tokens as a user's own client calls
/// it: listing, creating, joining and inviting into chats, paging history backwards, and
/// search. Every refusal has its code and Error body and changes nothing.
final class ClientAPITests: XCTestCase {
    func testChatsAreListedCreatedJoinedAndInvitedIntoAndEveryRefusalHasItsCode() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            _ = try await server.account("bob")
            let carol = try await server.account("carol")
            let mallory = try await server.account("mallory")
            _ = try await server.account("dave")
            let general = try await server.chat("general", members: ["alice", "bob"])
            try await withClient { client in
                let asAlice = DeviceAPI(client: client, peer: server.peer, token: alice.token)
                let asCarol = DeviceAPI(client: client, peer: server.peer, token: carol.token)
                let asMallory = DeviceAPI(client: client, peer: server.peer, token: mallory.token)

                let listed = try await asAlice.chats()
                XCTAssertEqual(listed, ChatList(chats: [ChatInfo(chatID: general, name: "general", lastSequence: 0, memberNames: ["alice", "bob"], memberCount: 2)], more: false))

                // Create: the caller and the named users are members; naming oneself changes nothing.
                let lunch = try await asAlice.create("lunch", members: ["bob", "alice"])
                XCTAssertEqual(lunch.name, "lunch")
                XCTAssertEqual(lunch.memberNames, ["alice", "bob"])
                XCTAssertEqual(lunch.memberCount, 2)
                XCTAssertEqual(lunch.lastSequence, 0)

                Self.refused(try await asCarol.post("/v1/chats", CreateChat(name: "lunch")), .conflict, .conflict, "a name taken through the API")
                Self.refused(try await asCarol.post("/v1/chats", CreateChat(name: "general")), .conflict, .conflict, "a name taken by an admin")
                Self.refused(try await asCarol.post("/v1/chats", CreateChat(name: "party", memberNames: ["bob", "nobody"])), .notFound, .notFound, "an unknown member")
                Self.refused(try await asCarol.post("/v1/chats/join", JoinChat(name: "party")), .notFound, .notFound, "nothing was created for the unknown member")
                for (name, what) in [("", "empty name"), (String(repeating: "n", count: 65), "name over 64 bytes"), ("tab\there", "control character"), (" padded", "leading space")] {
                    Self.refused(try await asCarol.post("/v1/chats", CreateChat(name: name)), .badRequest, .badRequest, what)
                }
                let crowd = (0...CreateChat.maxMemberNames).map { "user\($0)" }
                Self.refused(try await asCarol.post("/v1/chats", CreateChat(name: "crowd", memberNames: crowd)), .badRequest, .badRequest, "101 members")
                Self.refused(try await asCarol.call(.post, "/v1/chats", [0xFF, 0x01]), .badRequest, .badRequest, "not Protobuf")
                let anonymous = DeviceAPI(client: client, peer: server.peer, token: nil)
                Self.refused(try await anonymous.post("/v1/chats", CreateChat(name: "sneaky")), .unauthorized, .unauthorized, "no token")
                Self.refused(try await anonymous.call(.get, "/v1/chats"), .unauthorized, .unauthorized, "no token")
                Self.refused(try await DeviceAPI(client: client, peer: server.peer, token: "AAAAAAAAAAAAAAAAAAAAAA").post("/v1/chats/join", JoinChat(name: "lunch")), .unauthorized, .unauthorized, "unknown token")

                // Join: by name, and a second time changes nothing.
                let joined = try Self.answer(try await asCarol.post("/v1/chats/join", JoinChat(name: "lunch")), .changed, ChatInfo.self, "join")
                XCTAssertEqual(joined.chatID, lunch.chatID)
                XCTAssertEqual(joined.memberNames, ["alice", "bob", "carol"])
                let again = try Self.answer(try await asCarol.post("/v1/chats/join", JoinChat(name: "lunch")), .changed, ChatInfo.self, "join again")
                XCTAssertEqual(again, joined, "joining twice is joining once")
                Self.refused(try await asCarol.post("/v1/chats/join", JoinChat(name: "nothing")), .notFound, .notFound, "no such chat")
                Self.refused(try await asCarol.post("/v1/chats/join", JoinChat(name: "")), .badRequest, .badRequest, "no name")

                // Invite: only a member may, and only users who exist.
                Self.refused(try await asMallory.post("/v1/chats/invite", InviteToChat(chatID: lunch.chatID, userName: "mallory")), .forbidden, .forbidden, "a non-member invites herself")
                Self.refused(try await asMallory.post("/v1/chats/invite", InviteToChat(chatID: lunch.chatID, userName: "dave")), .forbidden, .forbidden, "a non-member invites another")
                let invited = try Self.answer(try await asCarol.post("/v1/chats/invite", InviteToChat(chatID: lunch.chatID, userName: "dave")), .changed, ChatInfo.self, "invite")
                XCTAssertEqual(invited.memberNames, ["alice", "bob", "carol", "dave"])
                XCTAssertEqual(invited.memberCount, 4)
                let reinvited = try Self.answer(try await asAlice.post("/v1/chats/invite", InviteToChat(chatID: lunch.chatID, userName: "dave")), .changed, ChatInfo.self, "invite again")
                XCTAssertEqual(reinvited, invited, "inviting a member changes nothing")
                Self.refused(try await asAlice.post("/v1/chats/invite", InviteToChat(chatID: lunch.chatID, userName: "nobody")), .notFound, .notFound, "an unknown user")
                Self.refused(try await asAlice.post("/v1/chats/invite", InviteToChat(chatID: 987_654, userName: "dave")), .notFound, .notFound, "an unknown chat")
                Self.refused(try await asAlice.post("/v1/chats/invite", InviteToChat(chatID: 0, userName: "dave")), .badRequest, .badRequest, "no chat id")

                // Members with their names: how a device names a sender it knows by id.
                let members = try Self.answer(try await asCarol.post("/v1/chats/members", ChatMembersRequest(chatID: lunch.chatID)), .content, ChatMembers.self, "members")
                XCTAssertEqual(members.members.map(\.name), ["alice", "bob", "carol", "dave"])
                XCTAssertEqual(Set(members.members.map(\.userID)).count, 4)
                XCTAssertFalse(members.more)
                Self.refused(try await asMallory.post("/v1/chats/members", ChatMembersRequest(chatID: lunch.chatID)), .forbidden, .forbidden, "a non-member asks for the members")
                Self.refused(try await asAlice.post("/v1/chats/members", ChatMembersRequest(chatID: 0)), .badRequest, .badRequest, "no chat id")

                // Each user lists exactly their chats; `after` pages.
                let carols = try await asCarol.chats()
                XCTAssertEqual(carols.chats.map(\.name), ["lunch"])
                let alices = try await asAlice.chats()
                XCTAssertEqual(alices.chats.map(\.name), ["general", "lunch"])
                XCTAssertEqual(alices.chats.last?.memberNames, ["alice", "bob", "carol", "dave"])
                let malloryHas = try await asMallory.chats()
                XCTAssertEqual(malloryHas.chats, [], "refusals changed nothing")
                let afterGeneral = try await asAlice.chats(after: general)
                XCTAssertEqual(afterGeneral.chats.map(\.name), ["lunch"])
                Self.refused(try await asAlice.call(.get, "/v1/chats", query: ["after=general"]), .badRequest, .badRequest, "after= not a number")

                for (method, path) in [(CoAPCode.put, "/v1/chats"), (.get, "/v1/chats/join"), (.delete, "/v1/chats/invite"), (.get, "/v1/history"), (.get, "/v1/search")] {
                    let response = try await asAlice.call(method, path)
                    XCTAssertEqual(response.code, .methodNotAllowed, "\(method) \(path)")
                }
            }

            // The memberships are the ones an admin sees.
            let chats = try await server.admin(["chat", "list"])["chats"] as! [[String: Any]]
            XCTAssertEqual(chats.map { $0["name"] as! String }, ["general", "lunch"])
            XCTAssertEqual(chats.last?["members"] as? [String], ["alice", "bob", "carol", "dave"])
        }
    }

    func testTheChatListComesInPagesOfTwoHundred() async throws {
        // One device sends hundreds of requests back to back, far past the per-device rate.
        try await withServer(["--config", try ServerProcess.configFile(ServerProcess.unlimitedDeviceRate)]) { server in
            let alice = try await server.account("alice")
            try await withClient { client in
                let asAlice = DeviceAPI(client: client, peer: server.peer, token: alice.token)
                for index in 0..<(ChatList.maxChats + 5) { _ = try await asAlice.create("room-\(index)") }
                let first = try await asAlice.chats()
                XCTAssertEqual(first.chats.count, ChatList.maxChats)
                XCTAssertTrue(first.more)
                let rest = try await asAlice.chats(after: try XCTUnwrap(first.chats.last?.chatID))
                XCTAssertEqual(rest.chats.count, 5)
                XCTAssertFalse(rest.more)
                XCTAssertEqual((first.chats + rest.chats).map(\.name), (0..<(ChatList.maxChats + 5)).map { "room-\($0)" }, "every chat once, in id order")
            }
        }
    }

    func testACreatedChatTakesMessagesAndItsHistoryPagesBackwards() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            let mallory = try await server.account("mallory")
            try await withClient { client in
                let asAlice = DeviceAPI(client: client, peer: server.peer, token: alice.token)
                let notes = try await asAlice.create("notes")
                for index in 1...5 {
                    let sent = try await client.send(SendMessage(clientMessageID: "n\(index)", chatID: notes.chatID, text: "note \(index)", clientSentAtMs: 0), token: alice.token, to: server.peer)
                    XCTAssertEqual(sent.code, .created)
                }
                _ = try await server.waitForHistory("notes", count: 5)

                let everything = try await asAlice.history(HistoryRequest(chatID: notes.chatID))
                XCTAssertEqual(everything.messages.map(\.text), (1...5).map { "note \($0)" })
                XCTAssertEqual(everything.messages.map(\.chatSequence), [1, 2, 3, 4, 5])
                XCTAssertEqual(everything.messages.map(\.senderDeviceID), Array(repeating: alice.deviceID, count: 5))
                XCTAssertFalse(everything.more)

                // Backwards, two at a time: each page ends right below the one before.
                var pages: [[UInt64]] = []
                var before: UInt64 = 0
                while true {
                    let page = try await asAlice.history(HistoryRequest(chatID: notes.chatID, beforeSequence: before, limit: 2))
                    pages.append(page.messages.map(\.chatSequence))
                    guard page.more, let first = page.messages.first else { break }
                    before = first.chatSequence
                    XCTAssertLessThan(pages.count, 10, "more must end")
                }
                XCTAssertEqual(pages, [[4, 5], [2, 3], [1]])
                let beforeFirst = try await asAlice.history(HistoryRequest(chatID: notes.chatID, beforeSequence: 1))
                XCTAssertEqual(beforeFirst, HistoryResponse(messages: [], more: false))

                let asMallory = DeviceAPI(client: client, peer: server.peer, token: mallory.token)
                Self.refused(try await asMallory.post("/v1/history", HistoryRequest(chatID: notes.chatID)), .forbidden, .forbidden, "a non-member")
                Self.refused(try await asAlice.post("/v1/history", HistoryRequest(chatID: 987_654)), .notFound, .notFound, "no such chat")
                Self.refused(try await asAlice.post("/v1/history", HistoryRequest(chatID: 0)), .badRequest, .badRequest, "no chat id")
                Self.refused(try await asAlice.call(.post, "/v1/history", [0x08]), .badRequest, .badRequest, "truncated body")
                Self.refused(try await DeviceAPI(client: client, peer: server.peer, token: nil).post("/v1/history", HistoryRequest(chatID: notes.chatID)), .unauthorized, .unauthorized, "no token")
            }
        }
    }

    /// The joiner is a member of the live Chat actor at once: they may send straight away, and
    /// the chat's next messages reach their push session as they are stored, not after the
    /// actor's next reload of its members (5 s), which a message sent before it never gets.
    func testAJoinerSendsAtOnceAndGetsTheChatsNextMessagesLive() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            let carol = try await server.account("carol")
            let general = try await server.chat("general", members: ["alice"])
            let fleet = try PushFleet(pushPort: server.pushPort, devices: [("carol", carol.token)], seed: 1, disconnectRate: 0, finishTimeout: 4)
            defer { fleet.stop() }
            try await fleet.waitUntilReady()
            try await withClient { client in
                // Alice's message brings the Chat actor to life, with its members as they are now.
                let first = try await client.send(SendMessage(clientMessageID: "a1", chatID: general, text: "anyone here?", clientSentAtMs: 0), token: alice.token, to: server.peer)
                XCTAssertEqual(first.code, .created)
                let asCarol = DeviceAPI(client: client, peer: server.peer, token: carol.token)
                let joined = try await asCarol.post("/v1/chats/join", JoinChat(name: "general"))
                XCTAssertEqual(joined.code, .changed)
                let hello = try await client.send(SendMessage(clientMessageID: "c1", chatID: general, text: "hello from carol", clientSentAtMs: 0), token: carol.token, to: server.peer)
                XCTAssertEqual(hello.code, .created, "the joiner may send at once: \(String(decoding: hello.payload, as: UTF8.self))")
                let welcome = try await client.send(SendMessage(clientMessageID: "a2", chatID: general, text: "welcome carol", clientSentAtMs: 0), token: alice.token, to: server.peer)
                XCTAssertEqual(welcome.code, .created)

                _ = try await server.waitForHistory("general", count: 3)
                let history = try await asCarol.history(HistoryRequest(chatID: general))
                XCTAssertEqual(history.messages.map(\.text), ["anyone here?", "hello from carol", "welcome carol"], "the joiner reads what was said before and after")
            }
            let result = try await fleet.finish(["carol": [general: 3]])
            XCTAssertFalse(result.timedOut, "carol's session did not get the chat's messages live: \(result.devices["carol"].map { "\($0.chats)" } ?? "") \(fleet.errorText.suffix(1000))")
            XCTAssertEqual(result.devices["carol"]?.chats[general]?.map(\.clientMessageID), ["a1", "c1", "a2"])
        }
    }

    /// Leaving: the chat stops taking the leaver's messages and answering their reads, at once
    /// (the live Chat actor is told); leaving twice is leaving once.
    func testALeaverCanNoLongerSendOrReadAndLeavingTwiceIsLeavingOnce() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let general = try await server.chat("general", members: ["alice", "bob"])
            try await withClient { client in
                let asBob = DeviceAPI(client: client, peer: server.peer, token: bob.token)
                // Bob's send brings the Chat actor to life with him as a member.
                let first = try await client.send(SendMessage(clientMessageID: "b1", chatID: general, text: "bye all", clientSentAtMs: 0), token: bob.token, to: server.peer)
                XCTAssertEqual(first.code, .created)
                let left = try await asBob.post("/v1/chats/leave", LeaveChat(chatID: general))
                XCTAssertEqual(left.code, .changed)
                let leftAgain = try await asBob.post("/v1/chats/leave", LeaveChat(chatID: general))
                XCTAssertEqual(leftAgain.code, .changed, "leaving again: the same answer")
                Self.refused(try await asBob.post("/v1/chats/leave", LeaveChat(chatID: 999_999)), .notFound, .notFound, "no such chat")

                let after = try await client.send(SendMessage(clientMessageID: "b2", chatID: general, text: "one more", clientSentAtMs: 0), token: bob.token, to: server.peer)
                XCTAssertEqual(after.code, .forbidden, "a leaver's send is refused at once")
                Self.refused(try await asBob.post("/v1/history", HistoryRequest(chatID: general)), .forbidden, .forbidden, "a leaver's history")
                let listed = try await asBob.chats().chats.map(\.chatID)
                XCTAssertEqual(listed, [], "the chat is no longer in his list")

                let asAlice = DeviceAPI(client: client, peer: server.peer, token: alice.token)
                let members = try ChatMembers(serializedBytes: try await asAlice.post("/v1/chats/members", ChatMembersRequest(chatID: general)).payload)
                XCTAssertEqual(members.members.map(\.name), ["alice"])
                _ = try await server.waitForHistory("general", count: 1)
                let history = try await server.history("general").map(\.clientMessageID)
                XCTAssertEqual(history, ["b1"], "what he said before leaving stays")
            }
        }
    }

    func testSearchFindsWordsOnlyInTheCallersChats() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            try await withClient { client in
                let asAlice = DeviceAPI(client: client, peer: server.peer, token: alice.token)
                let asBob = DeviceAPI(client: client, peer: server.peer, token: bob.token)
                let shared = try await asAlice.create("shared", members: ["bob"]).chatID
                let bobsOwn = try await asBob.create("bobs-notes").chatID
                for (id, chat, token, text) in [
                    ("s1", shared, alice.token, "lunch at the harbour"), ("b1", bobsOwn, bob.token, "harbour surprise party for alice"),
                    ("s2", shared, bob.token, "the harbour is lovely"),
                ] {
                    let sent = try await client.send(SendMessage(clientMessageID: id, chatID: chat, text: text, clientSentAtMs: 0), token: token, to: server.peer)
                    XCTAssertEqual(sent.code, .created)
                }
                _ = try await server.waitForHistory("shared", count: 2)
                _ = try await server.waitForHistory("bobs-notes", count: 1)
                // The index follows the store within the consumers' commit interval (250 ms).
                try await waitUntil("the messages are searchable", timeout: .seconds(5)) {
                    try await asBob.search(SearchRequest(words: "harbour")).hits.count == 3
                }

                let forAlice = try await asAlice.search(SearchRequest(words: "harbour"))
                XCTAssertEqual(Set(forAlice.hits.map(\.message.clientMessageID)), ["s1", "s2"], "nothing of bob's own chat")
                let lunch = try XCTUnwrap(forAlice.hits.first { $0.message.clientMessageID == "s1" })
                XCTAssertEqual(lunch.chatName, "shared")
                XCTAssertEqual(lunch.senderName, "alice")
                XCTAssertEqual(lunch.message.chatID, shared)
                XCTAssertTrue(lunch.snippet.contains("[harbour]"), lunch.snippet)
                let forBob = try await asBob.search(SearchRequest(words: "harbour"))
                XCTAssertEqual(Set(forBob.hits.map(\.message.clientMessageID)), ["s1", "s2", "b1"])
                let inOne = try await asBob.search(SearchRequest(words: "harbour", chatID: bobsOwn))
                XCTAssertEqual(inOne.hits.map(\.chatName), ["bobs-notes"])
                let limited = try await asBob.search(SearchRequest(words: "harbour", limit: 1))
                XCTAssertEqual(limited.hits.count, 1)
                let everyWord = try await asBob.search(SearchRequest(words: "harbour LUNCH"))
                XCTAssertEqual(everyWord.hits.map(\.message.clientMessageID), ["s1"], "every word, any case")
                let substring = try await asBob.search(SearchRequest(words: "harb"))
                XCTAssertEqual(substring.hits, [], "words, not substrings")

                Self.refused(try await asAlice.post("/v1/search", SearchRequest(words: "harbour", chatID: bobsOwn)), .forbidden, .forbidden, "a chat she is not in")
                Self.refused(try await asAlice.post("/v1/search", SearchRequest(words: "harbour", chatID: 987_654)), .notFound, .notFound, "no such chat")
                Self.refused(try await asAlice.post("/v1/search", SearchRequest(words: "")), .badRequest, .badRequest, "no words")
                Self.refused(try await asAlice.post("/v1/search", SearchRequest(words: "   ")), .badRequest, .badRequest, "only whitespace")
                let tooMany = (0..<33).map { "w\($0)" }.joined(separator: " ")
                Self.refused(try await asAlice.post("/v1/search", SearchRequest(words: tooMany)), .badRequest, .badRequest, "33 words")
                Self.refused(try await DeviceAPI(client: client, peer: server.peer, token: nil).post("/v1/search", SearchRequest(words: "harbour")), .unauthorized, .unauthorized, "no token")
            }
        }
    }

    /// 500 messages (about 130 KB) come back in one answer, in Block2 blocks our own client
    /// fetches to the end; an answer past the text budget is cut to the newest messages.
    func testAFiveHundredMessagePageComesInBlock2BlocksAndTheTextBudgetHolds() async throws {
        // One device sends hundreds of requests back to back, far past the per-device rate.
        try await withServer(["--config", try ServerProcess.configFile(ServerProcess.unlimitedDeviceRate)]) { server in
            let alice = try await server.account("alice")
            let big = try await server.chat("big", members: ["alice"])
            let long = try await server.chat("long", members: ["alice"])
            let padding = String(repeating: "x", count: 200)
            try await withClient { client in
                for index in 1...500 {
                    let sent = try await client.send(SendMessage(clientMessageID: "b\(index)", chatID: big, text: "message \(index) \(padding)", clientSentAtMs: 0), token: alice.token, to: server.peer)
                    XCTAssertEqual(sent.code, .created)
                }
                let huge = String(repeating: "y", count: 8_000)
                for index in 1...40 {
                    let sent = try await client.send(SendMessage(clientMessageID: "l\(index)", chatID: long, text: "\(index) \(huge)", clientSentAtMs: 0), token: alice.token, to: server.peer)
                    XCTAssertEqual(sent.code, .created)
                }
            }
            _ = try await server.waitForHistory("big", count: 500, timeout: 60)
            _ = try await server.waitForHistory("long", count: 40, timeout: 60)

            try await withClient { client in
                let asAlice = DeviceAPI(client: client, peer: server.peer, token: alice.token)
                let request = HistoryRequest(chatID: big, limit: 500)
                // One exchange alone gets the first block, and says there is more.
                let firstBlock = try await client.exchange(.request(.post, path: "/v1/history", query: ["t=\(alice.token)"], payload: request.serializedBytes(), contentFormat: CoAPContentFormat.protobuf), with: server.peer)
                XCTAssertEqual(firstBlock.code, .content)
                let block = try XCTUnwrap(try firstBlock.block2(), "a large answer is sent block-wise")
                XCTAssertEqual(block.number, 0)
                XCTAssertTrue(block.more)

                let whole = try await asAlice.call(.post, "/v1/history", request.serializedBytes())
                XCTAssertGreaterThan(whole.payload.count, 100_000)
                let page = try Self.answer(whole, .content, HistoryResponse.self, "500 messages")
                XCTAssertEqual(page.messages.map(\.chatSequence), (1...500).map { UInt64($0) })
                XCTAssertEqual(page.messages.last?.text, "message 500 \(padding)")
                XCTAssertFalse(page.more)

                let clamped = try await asAlice.history(HistoryRequest(chatID: big, limit: 100_000))
                XCTAssertEqual(clamped.messages.count, Int(HistoryRequest.maxLimit), "a limit above 500 counts as 500")
                let byDefault = try await asAlice.history(HistoryRequest(chatID: big))
                XCTAssertEqual(byDefault.messages.map(\.chatSequence), (451...500).map { UInt64($0) }, "50 by default, the newest")
                XCTAssertTrue(byDefault.more)

                // 40 messages of 8 KB: 32 fit in 256 KiB of text, the newest 32.
                let cut = try await asAlice.history(HistoryRequest(chatID: long, limit: 500))
                XCTAssertEqual(cut.messages.map(\.chatSequence), (9...40).map { UInt64($0) })
                XCTAssertTrue(cut.more)
                let rest = try await asAlice.history(HistoryRequest(chatID: long, beforeSequence: 9, limit: 500))
                XCTAssertEqual(rest.messages.map(\.chatSequence), (1...8).map { UInt64($0) })
                XCTAssertFalse(rest.more)
            }
        }
    }

    /// In process: a live Chat actor that is told of a new member lets them send at once,
    /// where otherwise it would wait for its next reload of the members.
    func testALiveChatActorToldOfAMemberPermitsThemAtOnce() async throws {
        let (storage, _, carol, chat, context) = try await chatOfAliceWithoutCarol()
        let region = ShardRegion<ChatEntity>(kind: "chat", context: context)

        let before = try await region.withEntity(chat.id) { try await $0.permits(carol.id) }
        XCTAssertFalse(before)
        try await storage.addMember(chatID: chat.id, userID: carol.id)
        let unannounced = try await region.withEntity(chat.id) { try await $0.permits(carol.id) }
        XCTAssertFalse(unannounced, "the actor has not reloaded its members yet")
        let live = try await region.withLiveEntity(chat.id) { entity -> Bool in
            await entity.memberAdded(carol.id)
            return true
        }
        XCTAssertEqual(live, true, "the actor is live")
        let after = try await region.withEntity(chat.id) { try await $0.permits(carol.id) }
        XCTAssertTrue(after)
    }

    /// In process: the gateway's membership check without a hop onto the chat's actor reads
    /// only a live actor, says what the actor would say without reloading, follows the members
    /// the actor is told of, and is gone once the actor is passivated.
    func testTheMembershipShortcutFollowsTheLiveChatActor() async throws {
        let (_, alice, carol, chat, context) = try await chatOfAliceWithoutCarol()
        var layout = ShardRegionConfiguration()
        layout.idleTimeout = .zero
        let region = ShardRegion<ChatEntity>(kind: "chat", context: context, configuration: layout)

        XCTAssertNil(region.liveEntity(chat.id), "nothing is live yet")
        let liveAtFirst = await region.liveCount()
        XCTAssertEqual(liveAtFirst, 0, "and the shortcut activates nothing")
        let permitted = try await region.withEntity(chat.id) { try await $0.permits(alice.id) }
        XCTAssertTrue(permitted)
        let entity = try XCTUnwrap(region.liveEntity(chat.id))
        XCTAssertTrue(entity.isKnownMember(alice.id))
        XCTAssertFalse(entity.isKnownMember(carol.id))

        _ = try await region.withLiveEntity(chat.id) { await $0.memberAdded(carol.id) }
        XCTAssertTrue(entity.isKnownMember(carol.id), "a member announced to the actor passes at once")
        _ = try await region.withLiveEntity(chat.id) { await $0.memberRemoved(alice.id) }
        XCTAssertFalse(entity.isKnownMember(alice.id), "a member who left is refused at once")
        let stillPermitted = try await region.withEntity(chat.id) { try await $0.permits(alice.id) }
        XCTAssertFalse(stillPermitted, "and the actor agrees")

        let passivated = await region.passivateIdle()
        XCTAssertEqual(passivated, 1)
        XCTAssertNil(region.liveEntity(chat.id), "a passivated actor is not read")
    }

    /// A chat of alice alone, carol a user outside it, and a Chat actor context that never
    /// reloads members by itself (within the test).
    private func chatOfAliceWithoutCarol() async throws -> (SQLiteStorage, User, User, Chat, ChatEntity.Context) {
        let storage = try temporaryStorage()
        let alice = try await storage.createUser(name: "alice")
        let carol = try await storage.createUser(name: "carol")
        let chat = try await storage.createChat(name: "general", memberIDs: [alice.id])
        var context = ChatEntity.Context(storage: storage)
        context.membershipRefreshInterval = .seconds(3600)
        return (storage, alice, carol, chat, context)
    }

    /// In process: the storage additions behind the API.
    func testStorageCreatesAChatWithItsMembersOrNothingAndPagesHistoryBackwards() async throws {
        let storage = try temporaryStorage()
        var users: [User] = []
        for name in ["zed", "amy", "bob"] { users.append(try await storage.createUser(name: name)) }
        let device = try await storage.createDevice(userID: users[0].id, name: "phone")

        do {
            _ = try await storage.createChat(name: "broken", memberIDs: [users[0].id, 999])
            XCTFail("a missing member must refuse the chat")
        } catch {
            XCTAssertEqual(error, .notFound("user 999"))
        }
        do {
            _ = try await storage.chat(named: "broken")
            XCTFail("the refused chat must not exist")
        } catch {
            XCTAssertEqual(error, .notFound("chat broken"))
        }
        let chat = try await storage.createChat(name: "room", memberIDs: users.map(\.id) + [users[0].id])
        let summary = try await storage.chatSummary(id: chat.id, maxMemberNames: 2)
        XCTAssertEqual(summary.memberNames, ["amy", "bob"], "the first names in byte order")
        XCTAssertEqual(summary.memberCount, 3)
        let listed = try await storage.chatSummaries(ofUser: users[1].id, afterChatID: 0, limit: 10, maxMemberNames: 10)
        XCTAssertEqual(listed.map(\.memberNames), [["amy", "bob", "zed"]])
        let none = try await storage.chatSummaries(ofUser: users[1].id, afterChatID: chat.id, limit: 10, maxMemberNames: 10)
        XCTAssertEqual(none, [])

        let messages = (1...7).map {
            StoredMessage(serverMessageID: UInt64(100 + $0), chatID: chat.id, sequence: 0, senderUserID: users[0].id, senderDeviceID: device.id,
                          clientMessageID: "m\($0)", text: "text \($0)", clientSentAtMilliseconds: 0, acceptedAtMilliseconds: 0)
        }
        _ = try await storage.storeMessages(messages, chatID: chat.id, afterSequence: 0)
        let newest = try await storage.history(chatID: chat.id, beforeSequence: .max, limit: 3)
        XCTAssertEqual(newest.map(\.sequence), [5, 6, 7])
        let middle = try await storage.history(chatID: chat.id, beforeSequence: 5, limit: 3)
        XCTAssertEqual(middle.map(\.sequence), [2, 3, 4])
        let oldest = try await storage.history(chatID: chat.id, beforeSequence: 2, limit: 3)
        XCTAssertEqual(oldest.map(\.sequence), [1])
        let nothing = try await storage.history(chatID: chat.id, beforeSequence: 1, limit: 3)
        XCTAssertEqual(nothing, [])
    }

    /// A fresh database in a directory removed when the test ends.
    func temporaryStorage() throws -> SQLiteStorage {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-api-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        return try SQLiteStorage(path: "\(directory)/db.sqlite3")
    }

    /// The answer decoded as `T`, after checking its code; throws otherwise.
    static func answer<T: WireMessage>(_ response: CoAPMessage, _ code: CoAPCode, _: T.Type, _ what: String) throws -> T {
        guard response.code == code else {
            throw ServerTestError("\(what): \(response.code), not \(code): \(String(decoding: response.payload, as: UTF8.self).prefix(300))")
        }
        return try T(serializedBytes: response.payload)
    }

    /// A refusal with its code and Error body.
    static func refused(_ response: CoAPMessage, _ code: CoAPCode, _ wireCode: WireErrorCode, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(response.code, code, what, file: file, line: line)
        let error = try? WireError(serializedBytes: response.payload)
        XCTAssertEqual(error?.code, wireCode, "\(what): \(String(decoding: response.payload, as: UTF8.self))", file: file, line: line)
        // A 4.01 answers an endpoint that showed no credential: its text goes when the answer would
        // outgrow the request (amplification); the code is always there.
        if wireCode != .unauthorized {
            XCTAssertFalse(error?.message.isEmpty ?? true, "\(what): the Error says what went wrong", file: file, line: line)
        }
    }
}

/// One device's calls to the client API over CoAP, with its token (or none).
struct DeviceAPI {
    let client: CoAPEndpoint
    let peer: SocketAddress
    let token: String?

    func call(_ method: CoAPCode, _ path: String, _ payload: [UInt8] = [], query: [String] = []) async throws -> CoAPMessage {
        let request = CoAPMessage.request(
            method, path: path, query: (token.map { ["t=\($0)"] } ?? []) + query, payload: payload,
            contentFormat: payload.isEmpty ? nil : CoAPContentFormat.protobuf
        )
        return try await client.request(request, to: peer)
    }

    func post(_ path: String, _ body: some WireMessage) async throws -> CoAPMessage {
        try await call(.post, path, body.serializedBytes())
    }

    func create(_ name: String, members: [String] = []) async throws -> ChatInfo {
        try ClientAPITests.answer(try await post("/v1/chats", CreateChat(name: name, memberNames: members)), .created, ChatInfo.self, "create \(name)")
    }

    func chats(after: UInt64? = nil) async throws -> ChatList {
        try ClientAPITests.answer(try await call(.get, "/v1/chats", query: after.map { ["after=\($0)"] } ?? []), .content, ChatList.self, "GET /v1/chats")
    }

    func history(_ request: HistoryRequest) async throws -> HistoryResponse {
        try ClientAPITests.answer(try await post("/v1/history", request), .content, HistoryResponse.self, "history")
    }

    func search(_ request: SearchRequest) async throws -> SearchResponse {
        try ClientAPITests.answer(try await post("/v1/search", request), .content, SearchResponse.self, "search")
    }
}
