import CourierCore
import CourierProtocol
import Foundation
import XCTest

/// The storage contract: what every store behind `ServerStorage` must do, written once and run by
/// each backend's test class (SQLite and PostgreSQL), so that both answer the same way.
final class StorageContract {
    let storage: any ServerStorage

    init(_ storage: any ServerStorage) {
        self.storage = storage
    }

    /// A user, a device of theirs, and a chat they are in.
    func member(_ name: String, of chat: Chat? = nil) async throws -> (User, Device, Chat) {
        let user = try await storage.createUser(name: name)
        let device = try await storage.createDevice(userID: user.id, name: "\(name)-phone")
        var joined = chat
        if joined == nil { joined = try await storage.createChat(name: "chat-of-\(name)") }
        let chat = joined!
        try await storage.addMember(chatID: chat.id, userID: user.id)
        return (user, device, chat)
    }

    func message(_ sequence: UInt64, in chat: Chat, from device: Device, _ text: String, clientID: String? = nil, serverID: UInt64? = nil) -> StoredMessage {
        StoredMessage(
            serverMessageID: serverID ?? 1000 + sequence, chatID: chat.id, sequence: sequence, senderUserID: device.userID, senderDeviceID: device.id,
            clientMessageID: clientID ?? "c-\(sequence)", text: text, clientSentAtMilliseconds: 1, acceptedAtMilliseconds: 2
        )
    }

    func namesAreValidatedAndUnique() async throws {
        _ = try await storage.createUser(name: "ann")
        await XCTAssertThrowsAsync(try await self.storage.createUser(name: "ann")) { XCTAssertEqual($0, .alreadyExists("user ann")) }
        await XCTAssertThrowsAsync(try await self.storage.createUser(name: "  ")) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        await XCTAssertThrowsAsync(try await self.storage.createUser(name: String(repeating: "x", count: 65))) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        await XCTAssertThrowsAsync(try await self.storage.createDevice(userID: 999, name: "d")) { XCTAssertEqual($0, .notFound("user 999")) }
    }

    /// A PSK identity finds its device and key; a second key is another identity beside the
    /// first; revoking the device's credentials ends both; unknown or oversized identities find
    /// nothing.
    func deviceKeysAreFoundByIdentityUntilRevoked() async throws {
        let (user, device, _) = try await member("ann")
        let first = try await storage.issueDeviceKey(deviceID: device.id)
        XCTAssertEqual(first.key.count, DeviceKey.keyBytes)
        XCTAssertEqual([first.userID, first.deviceID], [user.id, device.id])
        XCTAssertLessThanOrEqual(first.identity.utf8.count, DeviceKey.maxIdentityLength)
        let found = try await storage.deviceKey(identity: first.identity)
        XCTAssertEqual(found, first)
        let second = try await storage.issueDeviceKey(deviceID: device.id)
        XCTAssertNotEqual(second.identity, first.identity)
        XCTAssertNotEqual(second.key, first.key)
        let firstStill = try await storage.deviceKey(identity: first.identity)
        XCTAssertEqual(firstStill, first, "a new key leaves the earlier one valid")
        let unknown = try await storage.deviceKey(identity: "nobody")
        XCTAssertNil(unknown)
        let oversized = try await storage.deviceKey(identity: String(repeating: "x", count: 10_000))
        XCTAssertNil(oversized)
        await XCTAssertThrowsAsync(try await self.storage.issueDeviceKey(deviceID: 999_999)) {
            guard case .notFound = $0 else { return XCTFail("\($0)") }
        }

        _ = try await storage.revokeTokens(deviceID: device.id, now: Date())
        for key in [first, second] {
            let revoked = try await storage.deviceKey(identity: key.identity)
            XCTAssertNil(revoked, "revoking a device's credentials ends its keys")
        }

        // A provision that asks for keys gives every device one, in the same transaction.
        let provisioned = try await storage.provision(ProvisionPlan(users: [.init(name: "fleet-u0", deviceNames: ["d0", "d1"])], chats: [], tokenExpiresAt: nil, issueKeys: true))
        let devices = provisioned.users.flatMap(\.devices)
        XCTAssertEqual(devices.compactMap(\.key).count, 2)
        for device in devices {
            let key = try XCTUnwrap(device.key)
            let found = try await storage.deviceKey(identity: key.identity)
            XCTAssertEqual(found?.deviceID, device.id)
            XCTAssertEqual(found?.key, key.key)
        }
        let without = try await storage.provision(ProvisionPlan(users: [.init(name: "fleet-u0", deviceNames: ["d0"])], chats: [], tokenExpiresAt: nil))
        XCTAssertNil(without.users[0].devices[0].key, "no key unless asked")
    }

    /// What a cache of token answers must forget: the tokens revoked since a time, one by one
    /// or a device's all at once, and no other.
    func revokedTokensAreListedByHashSinceATime() async throws {
        let (_, device, _) = try await member("ann")
        let (_, other, _) = try await member("bob")
        let kept = try await storage.issueToken(deviceID: device.id, expiresAt: nil)
        let revoked = try await storage.issueToken(deviceID: device.id, expiresAt: nil)
        let otherTokens = [try await storage.issueToken(deviceID: other.id, expiresAt: nil), try await storage.issueToken(deviceID: other.id, expiresAt: nil)]
        let before = Date(milliseconds: Date().milliseconds - 1)
        let none = try await storage.tokensRevoked(since: before)
        XCTAssertEqual(none, [])
        _ = try await storage.revokeToken(revoked.token, now: Date())
        _ = try await storage.revokeTokens(deviceID: other.id, now: Date())
        let listed = try await storage.tokensRevoked(since: before)
        XCTAssertEqual(Set(listed), Set(([revoked] + otherTokens).map { DeviceToken.hash($0.token) }))
        XCTAssertFalse(listed.contains(DeviceToken.hash(kept.token)))
        let later = try await storage.tokensRevoked(since: Date().addingTimeInterval(60))
        XCTAssertEqual(later, [], "nothing revoked after that time")
    }

    func tokensAreStoredOnlyAsHashesAndHonourExpiryAndRevocation(everythingStored: () async throws -> Data) async throws {
        let (user, device, _) = try await member("ann")
        let token = try await storage.issueToken(deviceID: device.id, expiresAt: nil)
        XCTAssertEqual(token.token.count, 22)
        let identity = try await storage.authenticate(token: token.token, now: Date())
        XCTAssertEqual(identity?.userID, user.id)
        XCTAssertEqual(identity?.deviceID, device.id)

        let database = try await everythingStored()
        XCTAssertNil(database.range(of: Data(token.token.utf8)), "the plain token is nowhere in the database files")
        XCTAssertNotNil(database.range(of: Data(DeviceToken.hash(token.token))), "its hash is")

        let value2 = try await storage.authenticate(token: token.token + "x", now: Date())
        XCTAssertNil(value2)
        let expiring = try await storage.issueToken(deviceID: device.id, expiresAt: Date().addingTimeInterval(60))
        let value3 = try await storage.authenticate(token: expiring.token, now: Date())
        XCTAssertNotNil(value3)
        let value4 = try await storage.authenticate(token: expiring.token, now: Date().addingTimeInterval(61))
        XCTAssertNil(value4, "expired")

        let value5 = try await storage.revokeToken(token.token, now: Date())
        XCTAssertTrue(value5)
        let value6 = try await storage.revokeToken(token.token, now: Date())
        XCTAssertFalse(value6, "already revoked")
        let value7 = try await storage.authenticate(token: token.token, now: Date())
        XCTAssertNil(value7)
        let value8 = try await storage.revokeTokens(deviceID: device.id, now: Date())
        XCTAssertEqual(value8, 1, "the expiring one was still active")
        let value9 = try await storage.authenticate(token: expiring.token, now: Date())
        XCTAssertNil(value9)
    }

    /// An invite is stored as its hash and redeemed once, before it expires; redeeming creates
    /// its user if missing, a device and a token. A refused redeem changes nothing.
    func invitesAreHashedSingleUseAndExpire(everythingStored: () async throws -> Data) async throws {
        let now = Date()
        let invite = try await storage.createInvite(userName: "alice", expiresAt: now.addingTimeInterval(86_400))
        XCTAssertEqual(invite.code.count, 22)
        let database = try await everythingStored()
        XCTAssertNil(database.range(of: Data(invite.code.utf8)), "the plain code is nowhere in the database files")
        XCTAssertNotNil(database.range(of: Data(DeviceToken.hash(invite.code))), "its hash is")
        await XCTAssertThrowsAsync(try await self.storage.createInvite(userName: " ", expiresAt: now)) { guard case .invalid = $0 else { return XCTFail("\($0)") } }

        let unknown = try await storage.redeemInvite(code: invite.code + "x", deviceName: "laptop", now: now)
        XCTAssertNil(unknown)
        await XCTAssertThrowsAsync(try await self.storage.redeemInvite(code: invite.code, deviceName: "", now: now)) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        let users = try await storage.listUsers()
        XCTAssertEqual(users.map(\.name), [], "refused redeems create nothing")

        guard let redeemed = try await storage.redeemInvite(code: invite.code, deviceName: "laptop", now: now) else { return XCTFail("a fresh invite redeems") }
        XCTAssertEqual(redeemed.user.name, "alice")
        XCTAssertEqual(redeemed.device.name, "laptop")
        let identity = try await storage.authenticate(token: redeemed.token.token, now: now)
        XCTAssertEqual(identity?.deviceID, redeemed.device.id)
        XCTAssertEqual(identity?.userID, redeemed.user.id)
        let again = try await storage.redeemInvite(code: invite.code, deviceName: "phone", now: now)
        XCTAssertNil(again, "single use")

        // A second invite for an existing user adds a device to that user; a device name the
        // user has already is refused and leaves the code usable.
        let second = try await storage.createInvite(userName: "alice", expiresAt: now.addingTimeInterval(60))
        await XCTAssertThrowsAsync(try await self.storage.redeemInvite(code: second.code, deviceName: "laptop", now: now)) { XCTAssertEqual($0, .alreadyExists("device laptop of user \(redeemed.user.id)")) }
        let phone = try await storage.redeemInvite(code: second.code, deviceName: "phone", now: now)
        XCTAssertEqual(phone?.user.id, redeemed.user.id)
        let devices = try await storage.devices(ofUser: redeemed.user.id)
        XCTAssertEqual(devices.map(\.name), ["laptop", "phone"])

        let expiring = try await storage.createInvite(userName: "bob", expiresAt: now.addingTimeInterval(60))
        let late = try await storage.redeemInvite(code: expiring.code, deviceName: "laptop", now: now.addingTimeInterval(61))
        XCTAssertNil(late, "expired")
        let named = try await storage.listUsers()
        XCTAssertEqual(named.map(\.name), ["alice"], "an expired invite creates no user")
    }

    func storingDeduplicatesByDeviceAndClientIDAndChecksTheSequence() async throws {
        let (_, device, chat) = try await member("ann")
        let value10 = try await storage.storeMessage(message(1, in: chat, from: device, "one"))
        XCTAssertEqual(value10, .stored(message(1, in: chat, from: device, "one")))
        let value11 = try await storage.storeMessage(message(2, in: chat, from: device, "two"))
        XCTAssertEqual(value11, .stored(message(2, in: chat, from: device, "two")))

        // A replay of message 1, numbered 3 by a writer that did not know: nothing changes.
        let replay = message(3, in: chat, from: device, "one", clientID: "c-1", serverID: 5555)
        guard case .duplicate(let existing) = try await storage.storeMessage(replay) else { return XCTFail("expected duplicate") }
        XCTAssertEqual(existing.sequence, 1)
        XCTAssertEqual(existing.serverMessageID, 1001)
        guard case .conflict = try await storage.storeMessage(message(3, in: chat, from: device, "other text", clientID: "c-1")) else { return XCTFail("expected conflict") }

        await XCTAssertThrowsAsync(try await self.storage.storeMessage(self.message(5, in: chat, from: device, "gap"))) {
            XCTAssertEqual($0, .sequenceConflict(chatID: chat.id, expected: 4, found: 2))
        }
        let value12 = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 10).map(\.text)
        XCTAssertEqual(value12, ["one", "two"])
        let value13 = try await storage.history(chatID: chat.id, afterSequence: 1, limit: 10).map(\.sequence)
        XCTAssertEqual(value13, [2])
        let value14 = try await storage.chat(id: chat.id).lastSequence
        XCTAssertEqual(value14, 2)
        let value15 = try await storage.message(deviceID: device.id, clientMessageID: "c-2")?.text
        XCTAssertEqual(value15, "two")
        let value16 = try await storage.message(deviceID: device.id + 1, clientMessageID: "c-2")
        XCTAssertNil(value16, "dedup keys are per device")
    }

    func aBatchNumbersOnlyNewMessagesAndFindsDuplicatesWithinItself() async throws {
        let (_, device, chat) = try await member("ann")
        _ = try await storage.storeMessage(message(1, in: chat, from: device, "old", clientID: "old"))
        let batch = [
            message(0, in: chat, from: device, "a", clientID: "a"),
            message(0, in: chat, from: device, "old", clientID: "old"),
            message(0, in: chat, from: device, "b", clientID: "b"),
            message(0, in: chat, from: device, "a", clientID: "a"),
            message(0, in: chat, from: device, "not a", clientID: "a"),
        ].enumerated().map { index, message in
            var message = message
            message.serverMessageID = 100 + UInt64(index)
            return message
        }
        let outcomes = try await storage.storeMessages(batch, chatID: chat.id, afterSequence: 1)
        let summary = outcomes.map { outcome -> String in
            switch outcome {
            case .stored(let m): "stored \(m.sequence)"
            case .duplicate(let m): "duplicate of \(m.sequence)"
            case .conflict(let m): "conflict with \(m.sequence)"
            }
        }
        XCTAssertEqual(summary, ["stored 2", "duplicate of 1", "stored 3", "duplicate of 2", "conflict with 2"])
        let history = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 10)
        XCTAssertEqual(history.map(\.clientMessageID), ["old", "a", "b"])
        await XCTAssertThrowsAsync(try await self.storage.storeMessages(batch, chatID: chat.id, afterSequence: 1)) {
            XCTAssertEqual($0, .sequenceConflict(chatID: chat.id, expected: 1, found: 3), "a writer with a stale view is refused as a whole")
        }
    }

    func searchMatchesWholeWordsRanksAndRespectsMembership() async throws {
        let (ann, annDevice, general) = try await member("ann")
        let (bob, bobDevice, secret) = try await member("bob")
        try await storage.addMember(chatID: general.id, userID: bob.id)
        _ = try await storage.storeMessage(message(1, in: general, from: annDevice, "the weather is lovely today", clientID: "a1", serverID: 1))
        _ = try await storage.storeMessage(message(2, in: general, from: bobDevice, "weather weather weather everywhere", clientID: "b1", serverID: 2))
        _ = try await storage.storeMessage(message(1, in: secret, from: bobDevice, "secret weather plans", clientID: "b2", serverID: 3))
        // Search follows the store at the next durability point (SQLite indexes in batches).
        try await storage.makeDurable()

        let all = try await storage.search(words: "weather", userID: nil, chatID: nil, limit: 10)
        XCTAssertEqual(Set(all.map(\.message.serverMessageID)), [1, 2, 3])
        XCTAssertEqual(all.first?.message.serverMessageID, 2, "the message saying it most ranks first")
        XCTAssertTrue(all.first!.snippet.contains("[weather]"), all.first!.snippet)

        let value17 = try await storage.search(words: "weath", userID: nil, chatID: nil, limit: 10).isEmpty
        XCTAssertTrue(value17, "not a substring match")
        let value18 = try await storage.search(words: "eath", userID: nil, chatID: nil, limit: 10).isEmpty
        XCTAssertTrue(value18)
        let value19 = try await storage.search(words: "weather lovely", userID: nil, chatID: nil, limit: 10).map(\.message.serverMessageID)
        XCTAssertEqual(value19, [1], "every word must appear")

        let annSees = try await storage.search(words: "weather", userID: ann.id, chatID: nil, limit: 10)
        XCTAssertEqual(Set(annSees.map(\.message.serverMessageID)), [1, 2], "ann is not in bob's chat")
        let bobSees = try await storage.search(words: "weather", userID: bob.id, chatID: nil, limit: 10)
        XCTAssertEqual(Set(bobSees.map(\.message.serverMessageID)), [1, 2, 3])
        let value20 = try await storage.search(words: "weather", userID: nil, chatID: secret.id, limit: 10).map(\.message.serverMessageID)
        XCTAssertEqual(value20, [3])

        // FTS5 syntax in the words is plain text, not an operator or an error.
        let value21 = try await storage.search(words: "weather\" OR \"x", userID: nil, chatID: nil, limit: 10).isEmpty
        XCTAssertTrue(value21)
        let value22 = try await storage.search(words: "NEAR(weather", userID: nil, chatID: nil, limit: 10).isEmpty
        XCTAssertTrue(value22)
        await XCTAssertThrowsAsync(try await self.storage.search(words: "   ", userID: nil, chatID: nil, limit: 10)) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
    }

    func aMemberLeavesOnceAndPeersAreWhoShareAChat() async throws {
        let (ann, _, general) = try await member("ann")
        let (bob, _, _) = try await member("bob", of: general)
        let (cid, _, other) = try await member("cid")
        try await storage.addMember(chatID: other.id, userID: bob.id)
        let annPeers = try await storage.chatPeers(ofUser: ann.id, limit: 10)
        XCTAssertEqual(annPeers, [bob.id])
        let bobPeers = try await storage.chatPeers(ofUser: bob.id, limit: 10)
        XCTAssertEqual(Set(bobPeers), [ann.id, cid.id], "each peer once, from every shared chat")
        let bounded = try await storage.chatPeers(ofUser: bob.id, limit: 1)
        XCTAssertEqual(bounded.count, 1)

        let left = try await storage.removeMember(chatID: general.id, userID: bob.id)
        XCTAssertTrue(left)
        let again = try await storage.removeMember(chatID: general.id, userID: bob.id)
        XCTAssertFalse(again, "leaving twice changes nothing")
        await XCTAssertThrowsAsync(try await self.storage.removeMember(chatID: 999_999, userID: bob.id)) { XCTAssertEqual($0, .notFound("chat 999999")) }
        let members = try await storage.members(ofChat: general.id)
        XCTAssertEqual(members, [ann.id])
        let peersAfter = try await storage.chatPeers(ofUser: ann.id, limit: 10)
        XCTAssertEqual(peersAfter, [])
    }

    func deliveryCursorsOnlyMoveForward() async throws {
        let (_, device, chat) = try await member("ann")
        let value23 = try await storage.deliveryCursor(deviceID: device.id, chatID: chat.id)
        XCTAssertEqual(value23, 0)
        try await storage.advanceDeliveryCursor(deviceID: device.id, chatID: chat.id, to: 5)
        try await storage.advanceDeliveryCursor(deviceID: device.id, chatID: chat.id, to: 3)
        let value24 = try await storage.deliveryCursor(deviceID: device.id, chatID: chat.id)
        XCTAssertEqual(value24, 5)
    }

    func membershipAndListings() async throws {
        let (ann, _, chat) = try await member("ann")
        let bob = try await storage.createUser(name: "bob")
        try await storage.addMember(chatID: chat.id, userID: bob.id)
        try await storage.addMember(chatID: chat.id, userID: bob.id)
        let value25 = try await storage.members(ofChat: chat.id)
        XCTAssertEqual(value25, [ann.id, bob.id])
        let value26 = try await storage.chats(ofUser: bob.id).map(\.id)
        XCTAssertEqual(value26, [chat.id])
        let value27 = try await storage.listChats().first?.memberNames
        XCTAssertEqual(value27, ["ann", "bob"])
        let named = try await storage.memberUsers(ofChat: chat.id, limit: 10).map { "\($0.id) \($0.name)" }
        XCTAssertEqual(named, ["\(ann.id) ann", "\(bob.id) bob"], "with names, in id order")
        let first = try await storage.memberUsers(ofChat: chat.id, limit: 1).map(\.name)
        XCTAssertEqual(first, ["ann"])
        await XCTAssertThrowsAsync(try await self.storage.addMember(chatID: 999, userID: bob.id)) { XCTAssertEqual($0, .notFound("chat 999")) }
        let stats = try await storage.statistics()
        XCTAssertEqual([stats.users, stats.devices, stats.chats, stats.messages], [2, 1, 1, 0])
    }

    func aSecondConnectionSeesWritesAndWritesBeside(openSecond: () async throws -> any ServerStorage) async throws {
        // The admin commands open the same database while the server runs.
        let admin = try await openSecond()
        let (_, device, chat) = try await member("ann")
        let server = storage
        let messages = (1...50).map { message(UInt64($0), in: chat, from: device, "m\($0)") }
        let serverWrites = Task {
            for message in messages { _ = try await server.storeMessage(message) }
        }
        for index in 0..<20 { _ = try await admin.createUser(name: "user\(index)") }
        try await serverWrites.value
        let value28 = try await admin.history(chatID: chat.id, afterSequence: 0, limit: 100).count
        XCTAssertEqual(value28, 50)
        let value29 = try await storage.statistics().users
        XCTAssertEqual(value29, 21)
    }

    func plan(users: Int, devices: Int, chats: [[Int]], expires: Date? = nil) -> ProvisionPlan {
        ProvisionPlan(
            users: (0..<users).map { .init(name: "p-u\($0)", deviceNames: (0..<devices).map { "d\($0)" }) },
            chats: chats.enumerated().map { .init(name: "p-c\($0.offset)", memberIndexes: $0.element) },
            tokenExpiresAt: expires
        )
    }

    func aSecondProvisionReusesEveryNameAddsOnlyWhatIsMissingAndIssuesNewTokens() async throws {
        let existing = try await storage.createUser(name: "p-u1")
        let chat = try await storage.createChat(name: "p-c0", memberIDs: [existing.id])
        let expires = Date().addingTimeInterval(86_400)
        let first = try await storage.provision(plan(users: 3, devices: 2, chats: [[0, 1], [2, 0]], expires: expires))
        XCTAssertEqual(first.users.map(\.name), ["p-u0", "p-u1", "p-u2"])
        XCTAssertEqual(first.users[1].id, existing.id, "an existing user is reused")
        XCTAssertEqual(first.users.map { $0.devices.map(\.name) }, Array(repeating: ["d0", "d1"], count: 3))
        XCTAssertEqual(first.chats[0].id, chat.id, "an existing chat is reused")
        XCTAssertEqual(first.chats.map(\.memberUserIDs), [[first.users[0].id, existing.id], [first.users[2].id, first.users[0].id]])
        XCTAssertEqual(first.chats.map(\.addedUserIDs), [[first.users[0].id], [first.users[2].id, first.users[0].id]], "only new memberships count as added")
        for user in first.users {
            for device in user.devices {
                let identity = try await storage.authenticate(token: device.token, now: Date())
                XCTAssertEqual(identity?.userID, user.id)
                XCTAssertEqual(identity?.deviceID, device.id)
                XCTAssertEqual(identity?.expiresAt, Date(milliseconds: expires.milliseconds))
            }
        }

        let second = try await storage.provision(plan(users: 3, devices: 2, chats: [[0, 1], [2, 0]], expires: expires))
        XCTAssertEqual(second.users.map(\.id), first.users.map(\.id))
        XCTAssertEqual(second.users.map { $0.devices.map(\.id) }, first.users.map { $0.devices.map(\.id) })
        XCTAssertEqual(second.chats.map(\.id), first.chats.map(\.id))
        XCTAssertEqual(second.chats.map(\.addedUserIDs), [[], []])
        XCTAssertTrue(zip(second.users, first.users).allSatisfy { zip($0.devices, $1.devices).allSatisfy { $0.token != $1.token } }, "new tokens")
        let oldStillWorks = try await storage.authenticate(token: first.users[0].devices[0].token, now: Date())
        XCTAssertNotNil(oldStillWorks, "older tokens stay valid")
        let stats = try await storage.statistics()
        XCTAssertEqual([stats.users, stats.devices, stats.chats, stats.activeTokens], [3, 6, 2, 12])
        let members = try await storage.members(ofChat: chat.id)
        XCTAssertEqual(members, [first.users[0].id, existing.id])
    }

    func aBadNameOrMemberIndexChangesNothing() async throws {
        var bad = plan(users: 2, devices: 1, chats: [[0, 1]])
        bad.chats.append(.init(name: "p-c1", memberIndexes: [2]))
        await XCTAssertThrowsAsync(try await self.storage.provision(bad)) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        var badName = plan(users: 2, devices: 1, chats: [])
        badName.users[1].deviceNames = [String(repeating: "x", count: 65)]
        await XCTAssertThrowsAsync(try await self.storage.provision(badName)) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        let stats = try await storage.statistics()
        XCTAssertEqual([stats.users, stats.devices, stats.chats, stats.activeTokens], [0, 0, 0, 0])
    }

    func twentyThousandUsersWithADeviceEachTakeAFewSeconds() async throws {
        let started = ContinuousClock.now
        let result = try await storage.provision(plan(users: 20_000, devices: 1, chats: (0..<4_000).map { chat in (0..<5).map { (chat * 5 + $0) % 20_000 } }))
        let elapsed = ContinuousClock.now - started
        print("provisioned 20,000 users, 20,000 devices and 4,000 chats of 5 in \(elapsed)")
        XCTAssertEqual(Set(result.users.flatMap { $0.devices.map(\.token) }).count, 20_000)
        // Catches a round trip per row (75 s on PostgreSQL here), not a slow machine: set-based,
        // both stores take 2-5 s in a debug build.
        XCTAssertLessThan(elapsed, .seconds(30))
    }

    /// One batch, many chats: each chat numbered after its own last sequence, two writes into
    /// the same chat numbered in order, duplicates (within the batch too) and conflicts found,
    /// a non-member's message left out, a missing chat reported, and the other chats stored.
    /// `hintingUnseen`: every write says no key of it was ever seen (`ChatWrite.unseenKeys`), as
    /// a consumer whose filter was empty would; the outcomes must not change.
    func aBatchStoresEveryChatOnItsOwn(hintingUnseen: Bool = false) async throws {
        let (_, annDevice, general) = try await member("ann")
        let (bob, bobDevice, secret) = try await member("bob")
        _ = try await storage.storeMessage(message(1, in: general, from: annDevice, "before", clientID: "before", serverID: 500))
        func sent(_ device: Device, _ chat: Chat, _ clientID: String, _ text: String, id: UInt64) -> StoredMessage {
            StoredMessage(serverMessageID: id, chatID: chat.id, sequence: 0, senderUserID: device.userID, senderDeviceID: device.id,
                          clientMessageID: clientID, text: text, clientSentAtMilliseconds: 1, acceptedAtMilliseconds: 2)
        }
        func write(_ chatID: UInt64, _ messages: [StoredMessage]) -> ChatWrite {
            ChatWrite(chatID: chatID, messages: messages, unseenKeys: hintingUnseen ? Set(messages.map(\.serverMessageID)) : [])
        }
        let results = try await storage.storeBatch([
            write(secret.id, [sent(bobDevice, secret, "s1", "one", id: 601), sent(annDevice, secret, "intruder", "no", id: 602)]),
            write(general.id, [sent(annDevice, general, "g1", "first", id: 603), sent(annDevice, general, "g1", "first", id: 604)]),
            write(999_999, [sent(annDevice, general, "lost", "nowhere", id: 605)]),
            write(general.id, [sent(annDevice, general, "before", "before", id: 606), sent(annDevice, general, "g2", "second", id: 607),
                               sent(annDevice, general, "g1", "other text", id: 608)]),
            // A replay: the very message stored before, its server message id and all.
            write(general.id, [sent(annDevice, general, "before", "before", id: 500)]),
        ])
        func summary(_ result: ChatWriteResult) -> [String] {
            switch result {
            case .chatNotFound: return ["no chat"]
            case .failed(let error): return ["failed \(error)"]
            case .written(let outcomes, _, _):
                return outcomes.map { outcome in
                    switch outcome {
                    case .stored(let m)?: "stored \(m.serverMessageID) #\(m.sequence)"
                    case .duplicate(let m)?: "duplicate of \(m.serverMessageID) #\(m.sequence)"
                    case .conflict(let m)?: "conflict with \(m.serverMessageID)"
                    case nil: "not a member"
                    }
                }
            }
        }
        XCTAssertEqual(results.map(summary), [
            ["stored 601 #1", "not a member"],
            ["stored 603 #2", "duplicate of 603 #2"],
            ["no chat"],
            ["duplicate of 500 #1", "stored 607 #3", "conflict with 603"],
            ["duplicate of 500 #1"],
        ])
        guard case .written(_, let added, let members) = results[0] else { return XCTFail("written") }
        XCTAssertEqual(added.map(\.serverMessageID), [601])
        XCTAssertEqual(members, [bob.id])
        let generalHistory = try await storage.history(chatID: general.id, afterSequence: 0, limit: 10).map(\.clientMessageID)
        XCTAssertEqual(generalHistory, ["before", "g1", "g2"])
        let lastSequence = try await storage.chat(id: general.id).lastSequence
        XCTAssertEqual(lastSequence, 3)
        let found = try await storage.message(deviceID: annDevice.id, clientMessageID: "g2")?.serverMessageID
        XCTAssertEqual(found, 607, "the dedup key is stored with the message")
        try await storage.makeDurable()
        let searched = try await storage.search(words: "second", userID: nil, chatID: nil, limit: 10).map(\.message.serverMessageID)
        XCTAssertEqual(searched, [607], "searchable once stored and made durable")
    }

    func aCopyTakesItsOwnSequenceAndNoKeyAndIsNotStoredAgainOnAReplay() async throws {
        let user = try await storage.createUser(name: "ann")
        let device = try await storage.createDevice(userID: user.id, name: "phone")
        let chat = try await storage.createChat(name: "general", memberIDs: [user.id])
        func message(_ serverID: UInt64, _ clientID: String) -> StoredMessage {
            StoredMessage(serverMessageID: serverID, chatID: chat.id, sequence: 0, senderUserID: user.id, senderDeviceID: device.id,
                          clientMessageID: clientID, text: "text of \(clientID)", clientSentAtMilliseconds: 1, acceptedAtMilliseconds: 2)
        }
        let batch = [message(10, "a"), message(11, "a"), message(12, "b")]
        guard case .written(let outcomes, let added, _) = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: batch, copies: [11])])[0] else {
            return XCTFail("written")
        }
        XCTAssertEqual(added.map(\.serverMessageID), [10, 11, 12], "the copy is added to the chat like any message")
        XCTAssertEqual(outcomes.compactMap { $0 }.map { outcome -> UInt64 in if case .stored(let m) = outcome { m.sequence } else { 0 } }, [1, 2, 3])
        let history = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 10)
        XCTAssertEqual(history.map(\.clientMessageID), ["a", "a", "b"])
        XCTAssertEqual(history.map(\.serverMessageID), [10, 11, 12])
        let keyed = try await storage.message(deviceID: device.id, clientMessageID: "a")
        XCTAssertEqual(keyed?.serverMessageID, 10, "the dedup key names the original")

        guard case .written(let replay, let replayAdded, _) = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: [message(10, "a"), message(13, "a")], copies: [13])])[0] else {
            return XCTFail("written")
        }
        XCTAssertTrue(replayAdded.isEmpty)
        XCTAssertEqual(replay.compactMap { $0 }.map { outcome -> UInt64 in if case .duplicate(let m) = outcome { m.serverMessageID } else { 0 } }, [10, 10], "a replayed original and its copy store nothing")
        let after = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 10)
        XCTAssertEqual(after.count, 3)
    }

    /// Edits, deletes and renames are entries of the chat's order that change what they refer
    /// to; only the sender's own messages can be changed, a retry is a duplicate (also of a
    /// message edited since), and search follows the current text.
    func changesAreEntriesThatEditDeleteAndRenameWhatTheyReferTo() async throws {
        let (ann, annDevice, chat) = try await member("ann")
        let (_, bobDevice, _) = try await member("bob", of: chat)
        _ = try await storage.storeMessage(message(1, in: chat, from: annDevice, "hello world", clientID: "a1", serverID: 701))
        _ = try await storage.storeMessage(message(2, in: chat, from: bobDevice, "bobs remark", clientID: "b1", serverID: 702))
        // Indexed before they change: the edit and the delete replace index entries.
        try await storage.makeDurable()
        func change(_ device: Device, _ clientID: String, _ text: String, _ change: MessageChange?, id: UInt64) -> StoredMessage {
            StoredMessage(serverMessageID: id, chatID: chat.id, sequence: 0, senderUserID: device.userID, senderDeviceID: device.id,
                          clientMessageID: clientID, text: text, clientSentAtMilliseconds: 1, acceptedAtMilliseconds: Int64(id), change: change)
        }
        func outcomes(_ result: ChatWriteResult) -> [String] {
            guard case .written(let outcomes, _, _) = result else { return ["\(result)"] }
            return outcomes.map { outcome in
                switch outcome {
                case .stored(let m)?: "stored #\(m.sequence)"
                case .duplicate(let m)?: "duplicate of #\(m.sequence)"
                case .conflict(let m)?: "conflict with #\(m.sequence)"
                case nil: "refused"
                }
            }
        }
        let first = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: [
            change(annDevice, "a-edit", "hello there", .edit(sequence: 1), id: 703),
            change(bobDevice, "b-edit", "not mine", .edit(sequence: 1), id: 704),
            change(annDevice, "a-del", "", .delete(sequence: 2), id: 705),
            change(bobDevice, "b-del", "", .delete(sequence: 2), id: 706),
            change(annDevice, "a-name", "Lunch plans", .rename, id: 707),
            change(annDevice, "a-edit-change", "x", .edit(sequence: 3), id: 708),
            change(annDevice, "a-edit-future", "x", .edit(sequence: 99), id: 709),
        ])])
        XCTAssertEqual(first.map(outcomes), [["stored #3", "refused", "refused", "stored #4", "stored #5", "refused", "refused"]])

        let history = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 10)
        XCTAssertEqual(history.map(\.text), ["hello there", "", "hello there", "", "Lunch plans"])
        XCTAssertEqual(history.map(\.change), [nil, nil, .edit(sequence: 1), .delete(sequence: 2), .rename])
        XCTAssertEqual(history.map(\.deleted), [false, true, false, false, false])
        XCTAssertEqual(history[0].editedAtMilliseconds, 703, "edited when the edit was accepted")
        XCTAssertEqual(history[1].editedAtMilliseconds, 0)
        let title = try await storage.chat(id: chat.id).title
        XCTAssertEqual(title, "Lunch plans")

        try await storage.makeDurable()
        let there = try await storage.search(words: "there", userID: ann.id, chatID: nil, limit: 10).map(\.message.sequence)
        XCTAssertEqual(there, [1], "the edited message is found by its new text, the edit itself is not")
        let world = try await storage.search(words: "world", userID: ann.id, chatID: nil, limit: 10)
        XCTAssertEqual(world.count, 0, "nor by its old text")
        let remark = try await storage.search(words: "remark", userID: nil, chatID: nil, limit: 10)
        XCTAssertEqual(remark.count, 0, "a deleted message is not found")

        let retries = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: [
            change(annDevice, "a1", "hello world", nil, id: 710),
            change(bobDevice, "b1", "bobs remark", nil, id: 711),
            change(annDevice, "a-edit", "hello there", .edit(sequence: 1), id: 712),
            change(annDevice, "a-edit", "hello again", .edit(sequence: 1), id: 713),
            change(annDevice, "a-name", "Lunch plans", nil, id: 714),
        ])])
        XCTAssertEqual(retries.map(outcomes), [["duplicate of #1", "duplicate of #2", "duplicate of #3", "conflict with #3", "conflict with #5"]],
                       "a send retried after its message was edited or deleted is still the same send")

        _ = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: [change(bobDevice, "b2", "short-lived", nil, id: 720)])])
        let late = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: [
            change(bobDevice, "b2-del", "", .delete(sequence: 6), id: 721),
            change(bobDevice, "b2-edit", "back again", .edit(sequence: 6), id: 722),
        ])])
        XCTAssertEqual(late.map(outcomes), [["stored #7", "stored #8"]], "a change refers to what earlier writes stored")
        let gone = try await storage.history(chatID: chat.id, afterSequence: 5, limit: 1)
        XCTAssertEqual(gone.map(\.text), [""], "an edit after the delete changes nothing")
        XCTAssertEqual(gone.map(\.deleted), [true])

        await XCTAssertThrowsAsync(try await self.storage.storeMessages(
            [change(bobDevice, "b-edit-2", "not mine", .edit(sequence: 1), id: 730)], chatID: chat.id, afterSequence: 8
        )) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        let unchanged = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 1).map(\.text)
        XCTAssertEqual(unchanged, ["hello there"])
    }
}

/// XCTAssertThrowsError for async calls, with the error typed as StorageError.
func XCTAssertThrowsAsync<T>(_ expression: @autoclosure () async throws -> T, file: StaticString = #filePath, line: UInt = #line, _ check: (StorageError) -> Void) async {
    do {
        _ = try await expression()
        XCTFail("expected an error", file: file, line: line)
    } catch let error as StorageError {
        check(error)
    } catch {
        XCTFail("unexpected \(error)", file: file, line: line)
    }
}
