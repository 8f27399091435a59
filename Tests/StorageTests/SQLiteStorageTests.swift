import CourierCore
import CourierSQLite
import Foundation
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
        XCTAssertEqual(try storage.appliedMigrations(), ["v1: accounts, chats, messages, search, cursors", "v2: invites", "v3: changes (edit, delete, rename)", "v4: device keys"])
        _ = try await storage.createUser(name: "ann")
        let reopened = try SQLiteStorage(path: path)
        XCTAssertEqual(try reopened.appliedMigrations().count, 4)
        let value1 = try await reopened.user(named: "ann").name
        XCTAssertEqual(value1, "ann", "reopening keeps the data")
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
    func testChangesAreEntriesThatEditDeleteAndRenameWhatTheyReferTo() async throws { try await contract.changesAreEntriesThatEditDeleteAndRenameWhatTheyReferTo() }
    func testACopyTakesItsOwnSequenceAndNoKeyAndIsNotStoredAgainOnAReplay() async throws { try await contract.aCopyTakesItsOwnSequenceAndNoKeyAndIsNotStoredAgainOnAReplay() }
}
