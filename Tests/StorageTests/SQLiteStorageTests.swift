import CourierCore
import CourierSQLite
import Foundation
import XCTest

final class SQLiteStorageTests: XCTestCase {
    var directory: String!
    var storage: SQLiteStorage!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-storage-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        storage = try SQLiteStorage(path: "\(directory!)/courier.sqlite3")
    }

    override func tearDownWithError() throws {
        storage = nil
        try? FileManager.default.removeItem(atPath: directory)
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

    func testMigrationsAreVersionedAndRunOnce() async throws {
        XCTAssertEqual(try storage.appliedMigrations(), ["v1: accounts, chats, messages, search, cursors"])
        _ = try await storage.createUser(name: "ann")
        let reopened = try SQLiteStorage(path: "\(directory!)/courier.sqlite3")
        XCTAssertEqual(try reopened.appliedMigrations().count, 1)
        let value1 = try await reopened.user(named: "ann").name
        XCTAssertEqual(value1, "ann", "reopening keeps the data")
    }

    func testNamesAreValidatedAndUnique() async throws {
        _ = try await storage.createUser(name: "ann")
        await XCTAssertThrowsAsync(try await self.storage.createUser(name: "ann")) { XCTAssertEqual($0, .alreadyExists("user ann")) }
        await XCTAssertThrowsAsync(try await self.storage.createUser(name: "  ")) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        await XCTAssertThrowsAsync(try await self.storage.createUser(name: String(repeating: "x", count: 65))) { guard case .invalid = $0 else { return XCTFail("\($0)") } }
        await XCTAssertThrowsAsync(try await self.storage.createDevice(userID: 999, name: "d")) { XCTAssertEqual($0, .notFound("user 999")) }
    }

    func testTokensAreStoredOnlyAsHashesAndHonourExpiryAndRevocation() async throws {
        let (user, device, _) = try await member("ann")
        let token = try await storage.issueToken(deviceID: device.id, expiresAt: nil)
        XCTAssertEqual(token.token.count, 22)
        let identity = try await storage.authenticate(token: token.token, now: Date())
        XCTAssertEqual(identity?.userID, user.id)
        XCTAssertEqual(identity?.deviceID, device.id)

        let database = try Data(contentsOf: URL(fileURLWithPath: "\(directory!)/courier.sqlite3")) + ((try? Data(contentsOf: URL(fileURLWithPath: "\(directory!)/courier.sqlite3-wal"))) ?? Data())
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

    func testTokensAreRandomBase64URLAndNeverLookLikeAnOption() {
        let tokens = (0..<2000).map { _ in DeviceToken.generate() }
        XCTAssertEqual(Set(tokens).count, tokens.count)
        let alphabet = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for token in tokens {
            XCTAssertEqual(token.count, 22)
            XCTAssertTrue(token.unicodeScalars.allSatisfy(alphabet.contains), token)
            XCTAssertFalse(token.hasPrefix("-") || token.hasPrefix("_"), "\(token) would read as a command-line option")
        }
    }

    func testStoringDeduplicatesByDeviceAndClientIDAndChecksTheSequence() async throws {
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

    func testABatchNumbersOnlyNewMessagesAndFindsDuplicatesWithinItself() async throws {
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

    func testSearchMatchesWholeWordsRanksAndRespectsMembership() async throws {
        let (ann, annDevice, general) = try await member("ann")
        let (bob, bobDevice, secret) = try await member("bob")
        try await storage.addMember(chatID: general.id, userID: bob.id)
        _ = try await storage.storeMessage(message(1, in: general, from: annDevice, "the weather is lovely today", clientID: "a1", serverID: 1))
        _ = try await storage.storeMessage(message(2, in: general, from: bobDevice, "weather weather weather everywhere", clientID: "b1", serverID: 2))
        _ = try await storage.storeMessage(message(1, in: secret, from: bobDevice, "secret weather plans", clientID: "b2", serverID: 3))

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

    func testDeliveryCursorsOnlyMoveForward() async throws {
        let (_, device, chat) = try await member("ann")
        let value23 = try await storage.deliveryCursor(deviceID: device.id, chatID: chat.id)
        XCTAssertEqual(value23, 0)
        try await storage.advanceDeliveryCursor(deviceID: device.id, chatID: chat.id, to: 5)
        try await storage.advanceDeliveryCursor(deviceID: device.id, chatID: chat.id, to: 3)
        let value24 = try await storage.deliveryCursor(deviceID: device.id, chatID: chat.id)
        XCTAssertEqual(value24, 5)
    }

    func testMembershipAndListings() async throws {
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
        await XCTAssertThrowsAsync(try await self.storage.addMember(chatID: 999, userID: bob.id)) { XCTAssertEqual($0, .notFound("chat 999")) }
        let stats = try await storage.statistics()
        XCTAssertEqual([stats.users, stats.devices, stats.chats, stats.messages], [2, 1, 1, 0])
    }

    func testASecondConnectionSeesWritesAndWritesBeside() async throws {
        // The admin commands open the same database while the server runs.
        let admin = try SQLiteStorage(path: "\(directory!)/courier.sqlite3")
        let (_, device, chat) = try await member("ann")
        let server = storage!
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
