import CourierCore
import CourierSQLite
import Foundation
import Synchronization
import XCTest

/// Token answers are kept while the polls of revocations are fresh: a token revoked by another
/// process is refused at the next poll, long before the cache time, without a read of the
/// token; a kept answer is read again only when the polls fail or `longestKeep` has passed.
final class TokenAuthenticatorTests: XCTestCase {
    /// The real store, counting what the checker reads and failing its polls on demand.
    private final class CountingStore: CredentialStore {
        let storage: SQLiteStorage
        private let counts = Mutex((reads: 0, polls: 0, failPolls: false))
        init(_ storage: SQLiteStorage) { self.storage = storage }

        var reads: Int { counts.withLock { $0.reads } }
        var polls: Int { counts.withLock { $0.polls } }
        func failPolls(_ fail: Bool) { counts.withLock { $0.failPolls = fail } }

        func authenticate(token: String, now: Date) async throws(StorageError) -> TokenIdentity? {
            counts.withLock { $0.reads += 1 }
            return try await storage.authenticate(token: token, now: now)
        }
        func tokensRevoked(since: Date) async throws(StorageError) -> [[UInt8]] {
            let fail = counts.withLock { counts in
                counts.polls += 1
                return counts.failPolls
            }
            if fail { throw .unavailable("polls failing (test)") }
            return try await storage.tokensRevoked(since: since)
        }
        func deviceKey(identity: String) async throws(StorageError) -> DeviceKey? { try await storage.deviceKey(identity: identity) }
        func user(named name: String) async throws(StorageError) -> User { try await storage.user(named: name) }
        func devices(ofUser userID: UInt64) async throws(StorageError) -> [Device] { try await storage.devices(ofUser: userID) }
    }

    private func store() async throws -> (CountingStore, path: String, device: Device, token: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-tokens-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/db.sqlite3"
        let storage = try SQLiteStorage(path: path)
        let user = try await storage.createUser(name: "ann")
        let device = try await storage.createDevice(userID: user.id, name: "phone")
        let token = try await storage.issueToken(deviceID: device.id, expiresAt: nil).token
        return (CountingStore(storage), path, device, token)
    }

    /// Authenticates `token` every 20 ms for `duration`, failing the test on an answer other
    /// than `device`'s.
    private func keepAuthenticating(_ authenticator: TokenAuthenticator, _ token: String, as device: Device, for duration: Duration) async throws {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < duration {
            let answer = try await authenticator.authenticate(token)
            XCTAssertEqual(answer?.deviceID, device.id)
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Authenticates `token` every 20 ms until it is refused, for at most 10 s: the last
    /// answer, and how long that took.
    private func untilRefused(_ authenticator: TokenAuthenticator, _ token: String) async throws -> (TokenIdentity?, Duration) {
        let start = ContinuousClock.now
        var answer: TokenIdentity? = nil
        repeat {
            try await Task.sleep(for: .milliseconds(20))
            answer = try await authenticator.authenticate(token)
        } while answer != nil && ContinuousClock.now - start < .seconds(10)
        return (answer, ContinuousClock.now - start)
    }

    func testATokenRevokedByAnotherProcessIsRefusedAtTheNextPollWithoutAReadOfIt() async throws {
        let (store, path, device, token) = try await store()
        let authenticator = TokenAuthenticator(storage: store, cacheDuration: .seconds(60), pollInterval: .milliseconds(200))
        let first = try await authenticator.authenticate(token)
        XCTAssertEqual(first?.deviceID, device.id)
        // Another connection to the file is what the admin command in another process is.
        let revoked = try await SQLiteStorage(path: path).revokeToken(token, now: Date())
        XCTAssertTrue(revoked)
        let (answer, _) = try await untilRefused(authenticator, token)
        XCTAssertNil(answer, "refused within 10 s, where the cache time is 60 s")
        XCTAssertEqual(store.reads, 1, "refused by the poll, with no read of the token")
        let again = try await authenticator.authenticate(token)
        XCTAssertNil(again)
    }

    func testAKeptAnswerIsReadAgainOnlyWhenThePollsFail() async throws {
        let (store, _, device, token) = try await store()
        let authenticator = TokenAuthenticator(storage: store, cacheDuration: .milliseconds(1_500), pollInterval: .milliseconds(100))
        try await keepAuthenticating(authenticator, token, as: device, for: .seconds(3))
        XCTAssertEqual(store.reads, 1, "kept twice the cache time: the polls are fresh")
        XCTAssertGreaterThanOrEqual(store.polls, 3)

        store.failPolls(true)
        try await keepAuthenticating(authenticator, token, as: device, for: .seconds(3))
        XCTAssertGreaterThanOrEqual(store.reads, 2, "with the polls failing, read again past the cache time")
        XCTAssertLessThanOrEqual(store.reads, 4, "about once per cache time, not per request")
    }

    /// A revocation stamped far behind the poll's clock (another node's clock an hour slow) is
    /// in no poll's window: the read at `longestKeep` finds it.
    func testARevocationNoPollSeesTakesEffectWithinTheLongestKeep() async throws {
        let (store, path, device, token) = try await store()
        let authenticator = TokenAuthenticator(storage: store, cacheDuration: .milliseconds(500), pollInterval: .milliseconds(50), longestKeep: .seconds(2))
        let first = try await authenticator.authenticate(token)
        XCTAssertEqual(first?.deviceID, device.id)
        let revoked = try await SQLiteStorage(path: path).revokeToken(token, now: Date().addingTimeInterval(-3_600))
        XCTAssertTrue(revoked)
        let (answer, took) = try await untilRefused(authenticator, token)
        XCTAssertNil(answer, "refused once the answer was 2 s old")
        XCTAssertGreaterThanOrEqual(took, .milliseconds(1_500), "not by a poll (the revocation is in none), but by the read at 2 s")
        XCTAssertEqual(store.reads, 2)
    }
}
