import CourierCore
import Foundation
import XCTest

/// `provision`: one transaction that makes sure of users, devices, chats and memberships by
/// name, and issues every device a new token.
extension SQLiteStorageTests {
    func plan(users: Int, devices: Int, chats: [[Int]], expires: Date? = nil) -> ProvisionPlan {
        ProvisionPlan(
            users: (0..<users).map { .init(name: "p-u\($0)", deviceNames: (0..<devices).map { "d\($0)" }) },
            chats: chats.enumerated().map { .init(name: "p-c\($0.offset)", memberIndexes: $0.element) },
            tokenExpiresAt: expires
        )
    }

    func testASecondProvisionReusesEveryNameAddsOnlyWhatIsMissingAndIssuesNewTokens() async throws {
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

    func testABadNameOrMemberIndexChangesNothing() async throws {
        var bad = plan(users: 2, devices: 1, chats: [[0, 1]])
        bad.chats.append(.init(name: "p-c1", memberIndexes: [2]))
        await XCTAssertThrowsAsync(try await self.storage.provision(bad)) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        var badName = plan(users: 2, devices: 1, chats: [])
        badName.users[1].deviceNames = [String(repeating: "x", count: 65)]
        await XCTAssertThrowsAsync(try await self.storage.provision(badName)) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        let stats = try await storage.statistics()
        XCTAssertEqual([stats.users, stats.devices, stats.chats, stats.activeTokens], [0, 0, 0, 0])
    }

    func testTwentyThousandUsersWithADeviceEachTakeAFewSeconds() async throws {
        let started = ContinuousClock.now
        let result = try await storage.provision(plan(users: 20_000, devices: 1, chats: (0..<4_000).map { chat in (0..<5).map { (chat * 5 + $0) % 20_000 } }))
        let elapsed = ContinuousClock.now - started
        print("provisioned 20,000 users, 20,000 devices and 4,000 chats of 5 in \(elapsed)")
        XCTAssertEqual(Set(result.users.flatMap { $0.devices.map(\.token) }).count, 20_000)
        XCTAssertLessThan(elapsed, .seconds(10))
    }

    func testACopyTakesItsOwnSequenceAndNoKeyAndIsNotStoredAgainOnAReplay() async throws {
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
}
