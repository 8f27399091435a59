import CourierCore
import CourierPostgres
import Foundation
import Logging
import TestSupport
import XCTest

/// The storage contract on PostgreSQL (a real server: `TestPostgres`), and what only the cluster
/// store has: versioned migrations that a node checks, and clear errors for a wrong URL.
final class PostgresStorageTests: XCTestCase {
    var url: String!
    var storage: PostgresStorage!
    var contract: StorageContract { StorageContract(storage) }
    let logger = Logger(label: "courier.test.postgres")

    override func setUp() async throws {
        url = try TestPostgres.newDatabase()
        storage = try await PostgresStorage.open(url: PostgresURL(url), migrate: true, logger: logger)
    }

    override func tearDown() async throws {
        storage?.close()
        storage = nil
        let name = URLComponents(string: url)!.path.dropFirst()
        try TestPostgres.psql(TestPostgres.url(url, database: "postgres"), "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    func open(_ url: String, migrate: Bool) async throws(StorageError) -> PostgresStorage {
        try await PostgresStorage.open(url: PostgresURL(url), migrate: migrate, logger: logger)
    }

    func testMigrationsAreVersionedAndANodeRefusesASchemaItDoesNotKnow() async throws {
        let applied = try await storage.appliedMigrations()
        XCTAssertEqual(applied, ["v1: accounts, chats, messages, search, cursors", "v2: courier_store_batch, a batch of chats stored in one call", "v3: invites", "v4: changes (edit, delete, rename)", "v5: online users by node", "v6: device keys", "v7: revoked tokens by time"])
        _ = try await storage.createUser(name: "ann")
        let again = try await open(url, migrate: true)
        let reapplied = try await again.appliedMigrations()
        XCTAssertEqual(reapplied.count, 7, "a migration runs once")
        let kept = try await again.user(named: "ann").name
        XCTAssertEqual(kept, "ann")
        again.close()

        let empty = try TestPostgres.newDatabase()
        await XCTAssertThrowsAsync(try await self.open(empty, migrate: false)) {
            XCTAssertTrue("\($0)".contains("no Courier schema") && "\($0)".contains("courier-server migrate"), "\($0)")
        }
        let empties = try TestPostgres.psql(empty, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        XCTAssertEqual(empties.trimmingCharacters(in: .whitespacesAndNewlines), "0", "a node that refuses creates nothing")

        try TestPostgres.psql(url, "DELETE FROM courier_migrations WHERE version = 7")
        await XCTAssertThrowsAsync(try await self.open(self.url, migrate: false)) {
            XCTAssertTrue("\($0)".contains("the schema is at version 6 and this courier-server needs 7: run `courier-server migrate"), "\($0)")
        }
        try TestPostgres.psql(url, "INSERT INTO courier_migrations (version, name) VALUES (7, 'v7'), (99, 'from the future')")
        for migrate in [false, true] {
            await XCTAssertThrowsAsync(try await self.open(self.url, migrate: migrate)) {
                XCTAssertTrue("\($0)".contains("version 99, newer than this courier-server knows"), "\($0)")
            }
        }
    }

    func testABadURLAnUnreachableServerOrWrongCredentialsSayWhatFailed() async throws {
        for bad in ["http://courier@127.0.0.1/db", "postgres://127.0.0.1/db", "postgres://courier@127.0.0.1/", "postgres://courier@127.0.0.1/db?sslmode=sometimes", "postgres://courier@127.0.0.1:70000/db"] {
            XCTAssertThrowsError(try PostgresURL(bad), bad) { XCTAssertTrue("\($0)".contains("PostgreSQL URL"), "\($0)") }
        }
        let parsed = try PostgresURL("postgres://co%40rier:p%2Fss@db.example:6543/courier?sslmode=require")
        XCTAssertEqual([parsed.username, parsed.password, parsed.host, "\(parsed.port)", parsed.database], ["co@rier", "p/ss", "db.example", "6543", "courier"])
        XCTAssertFalse(parsed.description.contains("p/ss"), "the password stays out of logs")
        let members = try PostgresURL("postgres://courier:secret@db1:5433,db2,10.0.0.3:6000/courier?sslmode=disable")
        XCTAssertEqual(members.endpoints.map(\.description), ["db1:5433", "db2:5432", "10.0.0.3:6000"])
        XCTAssertEqual([members.username, members.password, members.database], ["courier", "secret", "courier"])
        XCTAssertEqual(members.description, "postgres://courier@db1:5433,db2:5432,10.0.0.3:6000/courier")
        for bad in ["postgres://courier@db1,,db2/db", "postgres://courier@db1:5432,db1:5432/db", "postgres://courier@db1,db2:99999/db"] {
            XCTAssertThrowsError(try PostgresURL(bad), bad) { XCTAssertTrue("\($0)".contains("PostgreSQL URL"), "\($0)") }
        }

        let server = URLComponents(string: url)!
        var unreachable = server
        unreachable.port = try await freeTCPPort()
        await XCTAssertThrowsAsync(try await self.open(unreachable.string!, migrate: false)) {
            XCTAssertTrue("\($0)".contains("cannot reach PostgreSQL at 127.0.0.1:\(unreachable.port!)"), "\($0)")
        }
        var wrongPassword = server
        wrongPassword.password = "not-the-password"
        await XCTAssertThrowsAsync(try await self.open(wrongPassword.string!, migrate: false)) {
            XCTAssertTrue("\($0)".contains("refused the credentials of user courier"), "\($0)")
        }
        await XCTAssertThrowsAsync(try await self.open(TestPostgres.url(url, database: "no_such_database"), migrate: false)) {
            XCTAssertTrue("\($0)".contains("has no database no_such_database"), "\($0)")
        }

        // Several members: the one that is the primary, past one that does not answer.
        let deadPort = try await freeTCPPort()
        let twoMembers = url.replacingOccurrences(of: "@127.0.0.1:\(server.port!)", with: "@127.0.0.1:\(deadPort),127.0.0.1:\(server.port!)")
        let storage = try await self.open(twoMembers, migrate: false)
        XCTAssertEqual(storage.primary.endpoint.port, server.port!)
        let none = try await storage.chats(ofUser: UInt64(Int64.max))
        XCTAssertEqual(none.count, 0, "queries go to the member that answered")
        storage.close()
        let noneAnswer = url.replacingOccurrences(of: "@127.0.0.1:\(server.port!)", with: "@127.0.0.1:\(deadPort),127.0.0.1:\(try await freeTCPPort())")
        await XCTAssertThrowsAsync(try await self.open(noneAnswer, migrate: false)) {
            XCTAssertTrue("\($0)".contains("no primary among the PostgreSQL members"), "\($0)")
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

    /// Everything in the database as pg_dump writes it, with each bytea value's bytes after it
    /// (the dump shows them in hex).
    func everythingStored() throws -> Data {
        let dump = try TestPostgres.run("/usr/bin/pg_dump", ["--data-only", url!])
        var data = Data(dump.utf8)
        for match in dump.matches(of: /\\x([0-9a-f]+)/) {
            let hex = Array(match.1.utf8)
            data.append(contentsOf: stride(from: 0, to: hex.count - 1, by: 2).compactMap { UInt8(String(decoding: hex[$0...$0 + 1], as: UTF8.self), radix: 16) })
        }
        return data
    }

    func testStoringDeduplicatesByDeviceAndClientIDAndChecksTheSequence() async throws { try await contract.storingDeduplicatesByDeviceAndClientIDAndChecksTheSequence() }
    func testABatchNumbersOnlyNewMessagesAndFindsDuplicatesWithinItself() async throws { try await contract.aBatchNumbersOnlyNewMessagesAndFindsDuplicatesWithinItself() }
    func testSearchMatchesWholeWordsRanksAndRespectsMembership() async throws { try await contract.searchMatchesWholeWordsRanksAndRespectsMembership() }
    func testDeliveryCursorsOnlyMoveForward() async throws { try await contract.deliveryCursorsOnlyMoveForward() }
    func testAMemberLeavesOnceAndPeersAreWhoShareAChat() async throws { try await contract.aMemberLeavesOnceAndPeersAreWhoShareAChat() }
    func testMembershipAndListings() async throws { try await contract.membershipAndListings() }

    func testASecondConnectionSeesWritesAndWritesBeside() async throws {
        // Another node, or an admin command, on the same database.
        try await contract.aSecondConnectionSeesWritesAndWritesBeside { [url, logger] in
            try await PostgresStorage.open(url: PostgresURL(url!), migrate: false, logger: logger)
        }
    }

    /// A query without an answer is given up at the storage's answer limit (the caller hears
    /// `.unavailable`, and a serial caller such as the group commit goes on) but never
    /// cancelled: once it can, it finishes by itself. Past `maximumAbandoned` such queries on the
    /// pool, the next one fails at once instead of waiting. The answer that never comes is stood
    /// in for by a lock held elsewhere.
    func testAQueryWithoutAnAnswerIsGivenUpAtTheLimitNeverCancelledAndTheirNumberIsBounded() async throws {
        let limited = try await PostgresStorage.open(url: PostgresURL(url), migrate: false, maximumConnections: 4, answerLimit: .seconds(1), logger: logger)
        defer { limited.close() }
        XCTAssertEqual(limited.maximumAbandoned, 2)
        let (_, device, chat) = try await contract.member("ann")
        func sent(_ clientID: String, id: UInt64) -> ChatWrite {
            ChatWrite(chatID: chat.id, messages: [StoredMessage(
                serverMessageID: id, chatID: chat.id, sequence: 0, senderUserID: device.userID, senderDeviceID: device.id,
                clientMessageID: clientID, text: clientID, clientSentAtMilliseconds: 1, acceptedAtMilliseconds: 2
            )])
        }
        // Another session holds the chat's row for 6 s: a commit of that chat waits for it.
        let url = self.url!
        let holder = Task.detached { try TestPostgres.psql(url, "BEGIN; SELECT id FROM chats WHERE id = \(chat.id) FOR UPDATE; SELECT pg_sleep(6); COMMIT;") }
        for _ in 0..<100 {
            if try TestPostgres.psql(url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(6)%' AND pid <> pg_backend_pid()").trimmingCharacters(in: .whitespacesAndNewlines) == "1" { break }
            try await Task.sleep(for: .milliseconds(50))
        }

        for clientID in ["first", "second"] {
            let started = ContinuousClock.now
            await XCTAssertThrowsAsync(try await limited.storeBatch([sent(clientID, id: clientID == "first" ? 701 : 702)])) {
                XCTAssertTrue("\($0)".contains("no answer from PostgreSQL"), "\($0)")
            }
            let waited = ContinuousClock.now - started
            XCTAssertLessThan(waited, .seconds(4), "given up at the limit (1 s), not when the lock went (6 s)")
        }
        let started = ContinuousClock.now
        await XCTAssertThrowsAsync(try await limited.maxServerMessageID()) {
            XCTAssertTrue("\($0)".contains("still unanswered"), "\($0)")
        }
        XCTAssertLessThan(ContinuousClock.now - started, .milliseconds(900), "refused at once, without waiting for the limit")

        // Neither commit was cancelled: both finish once the lock is released.
        _ = try await holder.value
        var stored: [String] = []
        for _ in 0..<100 {
            stored = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 10).map(\.clientMessageID)
            if stored.count == 2 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertEqual(Set(stored), ["first", "second"])
        var answered: UInt64?
        for _ in 0..<100 {
            answered = try? await limited.maxServerMessageID()
            if answered != nil { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertEqual(answered, 702, "queries are taken again once the given-up ones have answered")
    }

    /// A batch's rows count only once its transaction has committed. The commit fails here by a
    /// deferred trigger (PostgreSQL sends the statement's rows and CommandComplete, then the
    /// commit's error): the batch is not answered as stored, nothing is stored, and its retry
    /// takes the sequence it would have had. The same gap let a backend killed by `pg_ctl stop
    /// -m immediate` between its statement and its commit hand over rows of a transaction that
    /// never committed.
    func testABatchWhoseCommitFailsIsNotAnsweredAsStored() async throws {
        let (_, device, chat) = try await contract.member("ann")
        try TestPostgres.psql(url, """
            CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.text = 'refused at commit' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON messages DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();
            """)
        let write = ChatWrite(chatID: chat.id, messages: [StoredMessage(
            serverMessageID: 801, chatID: chat.id, sequence: 0, senderUserID: device.userID, senderDeviceID: device.id,
            clientMessageID: "late", text: "refused at commit", clientSentAtMilliseconds: 1, acceptedAtMilliseconds: 2
        )])
        await XCTAssertThrowsAsync(try await storage.storeBatch([write])) {
            XCTAssertTrue("\($0)".contains("refused at commit"), "\($0)")
        }
        let stored = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 10)
        XCTAssertEqual(stored.count, 0, "nothing of the failed commit is stored")
        let last = try await storage.chat(id: chat.id).lastSequence
        XCTAssertEqual(last, 0)

        try TestPostgres.psql(url, "DROP TRIGGER refuse_at_commit ON messages")
        guard case .written(let outcomes, _, _) = try await storage.storeBatch([write])[0], case .stored(let retried)? = outcomes.first else {
            return XCTFail("the retry is stored")
        }
        XCTAssertEqual(retried.sequence, 1, "the retry takes the first sequence: the failed commit numbered nothing")
    }

    func testASecondProvisionReusesEveryNameAddsOnlyWhatIsMissingAndIssuesNewTokens() async throws { try await contract.aSecondProvisionReusesEveryNameAddsOnlyWhatIsMissingAndIssuesNewTokens() }
    func testABadNameOrMemberIndexChangesNothing() async throws { try await contract.aBadNameOrMemberIndexChangesNothing() }
    func testTwentyThousandUsersWithADeviceEachTakeAFewSeconds() async throws { try await contract.twentyThousandUsersWithADeviceEachTakeAFewSeconds() }
    func testABatchStoresEveryChatOnItsOwn() async throws { try await contract.aBatchStoresEveryChatOnItsOwn() }
    func testABatchHintingEveryKeyUnseenStoresTheSame() async throws { try await contract.aBatchStoresEveryChatOnItsOwn(hintingUnseen: true) }
    func testChangesAreEntriesThatEditDeleteAndRenameWhatTheyReferTo() async throws { try await contract.changesAreEntriesThatEditDeleteAndRenameWhatTheyReferTo() }
    func testACopyTakesItsOwnSequenceAndNoKeyAndIsNotStoredAgainOnAReplay() async throws { try await contract.aCopyTakesItsOwnSequenceAndNoKeyAndIsNotStoredAgainOnAReplay() }
}
