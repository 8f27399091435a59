import CourierCore
import CourierProtocol
import CourierSQLite
import Foundation
import GRDB
import XCTest

/// The storage contract on the embedded store, and what only SQLite has (its files, a second
/// process opening the same database).
final class SQLiteStorageTests: XCTestCase {
    var directory: String!
    var storage: SQLiteStorage!
    var contract: StorageContract { StorageContract(storage) }
    var path: String { "\(directory!)/courier.sqlite3" }

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-storage-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        storage = try SQLiteStorage(path: path)
    }

    override func tearDownWithError() throws {
        storage = nil
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testMigrationsAreVersionedAndRunOnce() async throws {
        XCTAssertEqual(try storage.appliedMigrations(), ["v1: accounts, chats, messages, search, cursors", "v2: invites", "v3: changes (edit, delete, rename)", "v4: device keys", "v5: search queue", "v6: dedup keys without rowid", "v7: last sequence from the messages", "v8: revoked tokens by time"])
        _ = try await storage.createUser(name: "ann")
        let reopened = try SQLiteStorage(path: path)
        XCTAssertEqual(try reopened.appliedMigrations().count, 8)
        let value1 = try await reopened.user(named: "ann").name
        XCTAssertEqual(value1, "ann", "reopening keeps the data")
    }

    /// Upgrading a database of v5: v6 moves its dedup keys into a table without rowid, every
    /// key kept and still finding its message (a retry after the upgrade is a duplicate), v7
    /// drops the chats' last-sequence column, numbering going on from the stored messages, and
    /// v8 indexes the revoked tokens.
    func testAnOlderDatabaseKeepsItsDedupKeysAndItsNumberingThroughTheUpgrade() async throws {
        let contract = self.contract
        let (_, device, chat) = try await contract.member("ann")
        let sent = contract.message(1, in: chat, from: device, "before the upgrade", serverID: 901)
        _ = try await storage.storeMessage(sent)
        storage = nil
        // Back to the rowid table v1 made, as a database of v5 has it.
        let database = try DatabaseQueue(path: path)
        try await database.write { db in
            try db.execute(sql: """
                CREATE TABLE dedup_keys_v1 (
                    device_id INTEGER NOT NULL,
                    client_message_id TEXT NOT NULL,
                    server_message_id INTEGER NOT NULL REFERENCES messages(server_message_id),
                    PRIMARY KEY (device_id, client_message_id)
                );
                INSERT INTO dedup_keys_v1 SELECT device_id, client_message_id, server_message_id FROM dedup_keys;
                DROP TABLE dedup_keys;
                ALTER TABLE dedup_keys_v1 RENAME TO dedup_keys;
                DELETE FROM grdb_migrations WHERE identifier = 'v6: dedup keys without rowid';
                ALTER TABLE chats ADD COLUMN last_sequence INTEGER NOT NULL DEFAULT 0;
                UPDATE chats SET last_sequence = 1;
                DELETE FROM grdb_migrations WHERE identifier = 'v7: last sequence from the messages';
                DROP INDEX tokens_revoked;
                DELETE FROM grdb_migrations WHERE identifier = 'v8: revoked tokens by time';
                """)
            XCTAssertNotNil(try Int64.fetchOne(db, sql: "SELECT rowid FROM dedup_keys"), "the old table has rowids")
        }
        try database.close()

        storage = try SQLiteStorage(path: path)
        let found = try await storage.message(deviceID: device.id, clientMessageID: sent.clientMessageID)
        XCTAssertEqual(found?.serverMessageID, 901, "the key survives the upgrade and finds its message")
        let retry = contract.message(2, in: chat, from: device, "before the upgrade", clientID: sent.clientMessageID, serverID: 902)
        guard case .duplicate(let existing) = try await storage.storeMessage(retry) else { return XCTFail("a retry after the upgrade is a duplicate") }
        XCTAssertEqual(existing.serverMessageID, 901)
        let next = contract.message(2, in: chat, from: device, "after the upgrade", serverID: 903)
        let stored = try await storage.storeMessage(next)
        XCTAssertEqual(stored, .stored(next), "numbered after the messages stored before the upgrade")
        let last = try await storage.chat(id: chat.id).lastSequence
        XCTAssertEqual(last, 2)
        let upgraded = try DatabaseQueue(path: path)
        try await upgraded.read { db in
            XCTAssertThrowsError(try Int64.fetchOne(db, sql: "SELECT rowid FROM dedup_keys"), "no rowid any more")
            XCTAssertThrowsError(try Int64.fetchOne(db, sql: "SELECT last_sequence FROM chats"), "no last-sequence column any more")
            XCTAssertEqual(try String.fetchOne(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'tokens_revoked'"), "tokens_revoked", "v8's index")
        }
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

    // MARK: - The contract

    func testNamesAreValidatedAndUnique() async throws { try await contract.namesAreValidatedAndUnique() }

    func testRevokedTokensAreListedByHashSinceATime() async throws { try await contract.revokedTokensAreListedByHashSinceATime() }

    func testTokensAreStoredOnlyAsHashesAndHonourExpiryAndRevocation() async throws {
        try await contract.tokensAreStoredOnlyAsHashesAndHonourExpiryAndRevocation(everythingStored: everythingStored)
    }

    func testDeviceKeysAreFoundByIdentityUntilRevoked() async throws { try await contract.deviceKeysAreFoundByIdentityUntilRevoked() }

    func testInvitesAreHashedSingleUseAndExpire() async throws {
        try await contract.invitesAreHashedSingleUseAndExpire(everythingStored: everythingStored)
    }

    /// The database file and its write-ahead log, as bytes.
    func everythingStored() throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: path)) + ((try? Data(contentsOf: URL(fileURLWithPath: path + "-wal"))) ?? Data())
    }

    func testStoringDeduplicatesByDeviceAndClientIDAndChecksTheSequence() async throws { try await contract.storingDeduplicatesByDeviceAndClientIDAndChecksTheSequence() }
    func testABatchNumbersOnlyNewMessagesAndFindsDuplicatesWithinItself() async throws { try await contract.aBatchNumbersOnlyNewMessagesAndFindsDuplicatesWithinItself() }
    func testSearchMatchesWholeWordsRanksAndRespectsMembership() async throws { try await contract.searchMatchesWholeWordsRanksAndRespectsMembership() }
    func testDeliveryCursorsOnlyMoveForward() async throws { try await contract.deliveryCursorsOnlyMoveForward() }
    func testAMemberLeavesOnceAndPeersAreWhoShareAChat() async throws { try await contract.aMemberLeavesOnceAndPeersAreWhoShareAChat() }
    func testMembershipAndListings() async throws { try await contract.membershipAndListings() }

    func testASecondConnectionSeesWritesAndWritesBeside() async throws {
        // The admin commands open the same database while the server runs.
        try await contract.aSecondConnectionSeesWritesAndWritesBeside { [path] in try SQLiteStorage(path: path) }
    }

    func testASecondProvisionReusesEveryNameAddsOnlyWhatIsMissingAndIssuesNewTokens() async throws { try await contract.aSecondProvisionReusesEveryNameAddsOnlyWhatIsMissingAndIssuesNewTokens() }
    func testABadNameOrMemberIndexChangesNothing() async throws { try await contract.aBadNameOrMemberIndexChangesNothing() }
    func testTwentyThousandUsersWithADeviceEachTakeAFewSeconds() async throws { try await contract.twentyThousandUsersWithADeviceEachTakeAFewSeconds() }
    func testABatchStoresEveryChatOnItsOwn() async throws { try await contract.aBatchStoresEveryChatOnItsOwn() }
    func testABatchHintingEveryKeyUnseenStoresTheSame() async throws { try await contract.aBatchStoresEveryChatOnItsOwn(hintingUnseen: true) }
    func testChangesAreEntriesThatEditDeleteAndRenameWhatTheyReferTo() async throws { try await contract.changesAreEntriesThatEditDeleteAndRenameWhatTheyReferTo() }
    func testACopyTakesItsOwnSequenceAndNoKeyAndIsNotStoredAgainOnAReplay() async throws { try await contract.aCopyTakesItsOwnSequenceAndNoKeyAndIsNotStoredAgainOnAReplay() }

    /// Search is indexed in batches: a stored message waits in a queue until the next
    /// durability point, and a change to a message still queued leaves the index whole (FTS5's
    /// own integrity check), found by its current text only.
    func testSearchIsIndexedInBatchesAndChangesToQueuedMessagesKeepTheIndexWhole() async throws {
        let contract = self.contract
        let (_, device, chat) = try await contract.member("ann")
        _ = try await storage.storeMessage(contract.message(1, in: chat, from: device, "first draft", serverID: 801))
        _ = try await storage.storeMessage(contract.message(2, in: chat, from: device, "doomed words", serverID: 802))
        let early = try await storage.search(words: "draft", userID: nil, chatID: nil, limit: 10)
        XCTAssertEqual(early.count, 0, "not indexed before the durability point")

        func change(_ id: UInt64, _ text: String, _ change: MessageChange) -> StoredMessage {
            StoredMessage(serverMessageID: id, chatID: chat.id, sequence: 0, senderUserID: device.userID, senderDeviceID: device.id,
                          clientMessageID: "c\(id)", text: text, clientSentAtMilliseconds: 1, acceptedAtMilliseconds: 2, change: change)
        }
        let changed = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: [
            change(803, "final version", .edit(sequence: 1)), change(804, "", .delete(sequence: 2)),
        ])])
        guard case .written(_, let added, _) = changed[0] else { return XCTFail("\(changed)") }
        XCTAssertEqual(added.count, 2)
        try await storage.makeDurable()

        func found(_ words: String) async throws -> [UInt64] {
            try await storage.search(words: words, userID: nil, chatID: nil, limit: 10).map(\.message.serverMessageID)
        }
        let final = try await found("final")
        XCTAssertEqual(final, [801], "found by its edited text")
        let draft = try await found("draft")
        XCTAssertEqual(draft, [], "not by the text it had while queued")
        let doomed = try await found("doomed")
        XCTAssertEqual(doomed, [], "a message deleted while queued is never indexed")

        let database = try DatabaseQueue(path: path)
        try await database.write { db in
            try db.execute(sql: "INSERT INTO message_search (message_search) VALUES ('integrity-check')")
            XCTAssertEqual(try Int.fetchOne(db, sql: "SELECT count(*) FROM search_queue"), 0, "the queue is emptied")
        }
        // And an edit of a message indexed already replaces its entry.
        _ = try await storage.storeBatch([ChatWrite(chatID: chat.id, messages: [change(805, "second thoughts", .edit(sequence: 1))])])
        let second = try await found("thoughts")
        XCTAssertEqual(second, [801], "an indexed message's entry is replaced in the edit's own transaction")
        try await database.write { db in try db.execute(sql: "INSERT INTO message_search (message_search) VALUES ('integrity-check')") }
    }
}
