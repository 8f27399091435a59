import Foundation
import Synchronization

/// Checks device tokens on every request without a database read each time.
///
/// - A token's answer is read once and kept. Once a second at most (`pollInterval`, when a
///   request comes) the authenticator asks storage which tokens were revoked lately, by any
///   process, and forgets those (`CredentialStore.tokensRevoked`). An answer stands
///   `cacheDuration` from its read, as a plain cache; past that, a found token's answer
///   stands while the last poll is younger than two intervals, up to `longestKeep` from its
///   read. So a revocation takes effect within about two seconds while requests come, within
///   `cacheDuration` of the answer's read when polls fail or run long, and within
///   `longestKeep` whatever the clocks say. A fleet whose devices send less often than
///   `cacheDuration` no longer costs a read per request.
/// - Each poll looks back `longestKeep` before the last one started, so a revocation stamped
///   by a clock that far behind, or seen by no poll while a read was on its way, is forgotten
///   again at the next poll; one stamped further behind waits for the read at `longestKeep`.
///   Hashes a poll returned are kept until they leave two such margins, so that a read that
///   started before the revocation cannot put the token back in between.
/// - Expiry is checked on every use against the expiry read with the answer: nothing changes
///   a token's expiry after it is issued.
/// - Unknown tokens are kept too (for `cacheDuration` from their read), so a flood of bad
///   tokens is not a flood of queries. DTLS peer identities are kept `cacheDuration` from their
///   read.
///
/// Bounded: at `capacity` tokens (or peers) that map is emptied and refills from storage
/// (entries are cheap to lose; the bound is what matters under a flood of distinct tokens),
/// and the revoked hashes kept are those of the last two margins, at most `capacity`.
public final class TokenAuthenticator: Sendable {
    private struct Entry {
        var identity: TokenIdentity?
        /// When the read that found it started.
        var checkedAt: ContinuousClock.Instant
    }

    private struct State {
        var tokens: [[UInt8]: Entry] = [:]
        var peers: [String: Entry] = [:]
        /// The last poll of revocations that answered: when it started.
        var polledAt: ContinuousClock.Instant?
        var polledAtDate: Date?
        var polling = false
        /// When the last poll, answered or not, started: a failing store is asked once an interval.
        var attemptedAt: ContinuousClock.Instant?
        /// Hashes that polls returned, with when that poll started, and the oldest of those times.
        var revoked: [[UInt8]: Date] = [:]
        var oldestRevoked: Date?
    }

    private let storage: any CredentialStore
    private let cacheDuration: Duration
    private let pollInterval: Duration
    /// The longest a found token's answer is kept without a read, and how far a poll looks
    /// back before the last one started.
    private let longestKeep: Duration
    private let longestKeepSeconds: TimeInterval
    private let capacity: Int
    private let state = Mutex(State())

    public init(storage: any CredentialStore, cacheDuration: Duration = .seconds(5), pollInterval: Duration = .seconds(1), longestKeep: Duration = .seconds(60), capacity: Int = 100_000) {
        self.storage = storage
        self.cacheDuration = cacheDuration
        self.pollInterval = min(pollInterval, cacheDuration)
        self.longestKeep = longestKeep
        self.longestKeepSeconds = longestKeep / .seconds(1)
        self.capacity = capacity
    }

    /// Who `token` speaks for, or nil when it is unknown, revoked or expired.
    public func authenticate(_ token: String) async throws(StorageError) -> TokenIdentity? {
        guard !token.isEmpty, token.utf8.count <= DeviceToken.maxLength else { return nil }
        guard cacheDuration > .zero else { return try await storage.authenticate(token: token, now: Date()) }
        let hash = DeviceToken.hash(token)
        // One lock on the common path: the poll's turn is claimed in the same look as the
        // kept answer, and only a request that claims it waits for the poll.
        var (pollSince, answer) = state.withLock { state in (claimPoll(&state), kept(hash, in: state)) }
        if let pollSince {
            await poll(since: pollSince)
            answer = state.withLock { state in kept(hash, in: state) }
        }
        if let answer { return Self.unexpired(answer) }
        let now = ContinuousClock.now
        var identity = try await storage.authenticate(token: token, now: Date())
        state.withLock { state in
            // Revoked while the read was on its way, and a poll saw it already.
            if state.revoked[hash] != nil { identity = nil }
            if state.tokens.count >= capacity { state.tokens.removeAll(keepingCapacity: true) }
            state.tokens[hash] = Entry(identity: identity, checkedAt: now)
        }
        return identity
    }

    /// The answer kept for `hash` (`.some(nil)`: refused), or nil when it must be read.
    private func kept(_ hash: [UInt8], in state: State) -> TokenIdentity?? {
        // A revoked token never comes back: no read needed.
        if state.revoked[hash] != nil { return .some(nil) }
        guard let entry = state.tokens[hash] else { return nil }
        let now = ContinuousClock.now
        let age = now - entry.checkedAt
        // A found token is read again at `longestKeep` whatever else holds (a revocation
        // stamped by a clock further behind than the polls look back is seen by that read).
        if entry.identity != nil && age >= longestKeep { return nil }
        if age < cacheDuration { return .some(entry.identity) }
        // Past that, a found token stands while a poll that would have forgotten it is
        // recent: two intervals, so that requests during the next poll need not read. A
        // poll that ran long, or polls that fail, leave only the plain cache time.
        guard entry.identity != nil, let polledAt = state.polledAt, now - polledAt < pollInterval * 2 else { return nil }
        return .some(entry.identity)
    }

    /// Claims the next poll of revocations when `pollInterval` has passed since the last
    /// attempt and none is running; returns how far back it asks (a margin before the last
    /// answered poll). One caller polls at a time; the others go on with what is kept.
    private func claimPoll(_ state: inout State) -> Date? {
        let now = ContinuousClock.now
        guard !state.polling, state.attemptedAt.map({ now - $0 >= pollInterval }) ?? true else { return nil }
        state.polling = true
        state.attemptedAt = now
        return (state.polledAtDate ?? Date()).addingTimeInterval(-longestKeepSeconds)
    }

    /// Asks storage for the revocations since `since` and forgets those tokens. A failed poll
    /// changes nothing.
    private func poll(since: Date) async {
        let startedAt = ContinuousClock.now
        let startedAtDate = Date()
        let revoked = try? await storage.tokensRevoked(since: since)
        state.withLock { state in
            state.polling = false
            guard let revoked else { return }
            // Each poll returns a revocation for a minute. A hash kept from an earlier poll needs
            // nothing more: its token was forgotten then, and every read since saw the hash.
            for hash in revoked where state.revoked[hash] == nil {
                state.tokens.removeValue(forKey: hash)
                state.revoked[hash] = startedAtDate
                state.oldestRevoked = min(state.oldestRevoked ?? startedAtDate, startedAtDate)
            }
            let oldest = startedAtDate.addingTimeInterval(-2 * longestKeepSeconds)
            // Pruned only when something is due to go, not at every poll.
            if let kept = state.oldestRevoked, kept < oldest {
                state.revoked = state.revoked.filter { $0.value >= oldest }
                state.oldestRevoked = state.revoked.values.min()
            }
            // Past the bound the hashes go; the next polls' margin still forgets their tokens.
            if state.revoked.count > capacity {
                state.revoked.removeAll()
                state.oldestRevoked = nil
            }
            state.polledAt = startedAt
            state.polledAtDate = startedAtDate
        }
    }

    /// The device a DTLS association proved to be: `psk:IDENTITY` names a device key,
    /// `cert:USER/DEVICE` a device by its user's and its own name (the common name of a client
    /// certificate the configured authority signed). Nil when it names no device, or the key
    /// was revoked.
    public func authenticate(peerIdentity: String) async throws(StorageError) -> TokenIdentity? {
        try await cached(peerIdentity) { [storage] () async throws(StorageError) -> TokenIdentity? in
            if peerIdentity.hasPrefix("psk:") {
                return try await storage.deviceKey(identity: String(peerIdentity.dropFirst(4))).map {
                    TokenIdentity(userID: $0.userID, deviceID: $0.deviceID, expiresAt: nil)
                }
            }
            guard peerIdentity.hasPrefix("cert:") else { return nil }
            let names = peerIdentity.dropFirst(5).split(separator: "/", omittingEmptySubsequences: false)
            guard names.count == 2 else { return nil }
            let user: User
            do throws(StorageError) {
                user = try await storage.user(named: String(names[0]))
            } catch {
                guard case .notFound = error else { throw error }
                return nil
            }
            return try await storage.devices(ofUser: user.id).first { $0.name == names[1] }.map {
                TokenIdentity(userID: user.id, deviceID: $0.id, expiresAt: nil)
            }
        }
    }

    private func cached(_ key: String, _ lookup: () async throws(StorageError) -> TokenIdentity?) async throws(StorageError) -> TokenIdentity? {
        let now = ContinuousClock.now
        if let entry = state.withLock({ $0.peers[key] }), now - entry.checkedAt < cacheDuration {
            return Self.unexpired(entry.identity)
        }
        let identity = try await lookup()
        state.withLock { state in
            if state.peers.count >= capacity { state.peers.removeAll(keepingCapacity: true) }
            state.peers[key] = Entry(identity: identity, checkedAt: now)
        }
        return identity
    }

    private static func unexpired(_ identity: TokenIdentity?) -> TokenIdentity? {
        guard let identity else { return nil }
        if let expires = identity.expiresAt, expires <= Date() { return nil }
        return identity
    }
}
