import Foundation
import Synchronization

/// Checks device tokens on every request without a database read each time: answers are
/// cached for `cacheDuration`, so a revocation takes effect within that time (expiry is checked
/// on every use). Unknown tokens are cached too, so a flood of bad tokens is not a flood of
/// queries.
///
/// Bounded: at `capacity` entries the cache is emptied and refills from storage (entries are
/// cheap to lose; the bound is what matters under a flood of distinct tokens).
public final class TokenAuthenticator: Sendable {
    private struct Entry {
        var identity: TokenIdentity?
        var checkedAt: ContinuousClock.Instant
    }

    private let storage: any ServerStorage
    private let cacheDuration: Duration
    private let capacity: Int
    private let cache = Mutex<[String: Entry]>([:])

    public init(storage: any ServerStorage, cacheDuration: Duration = .seconds(5), capacity: Int = 100_000) {
        self.storage = storage
        self.cacheDuration = cacheDuration
        self.capacity = capacity
    }

    /// Who `token` speaks for, or nil when it is unknown, revoked or expired.
    public func authenticate(_ token: String) async throws(StorageError) -> TokenIdentity? {
        guard !token.isEmpty, token.utf8.count <= DeviceToken.maxLength else { return nil }
        let now = ContinuousClock.now
        if let entry = cache.withLock({ $0[token] }), now - entry.checkedAt < cacheDuration {
            return Self.unexpired(entry.identity)
        }
        let identity = try await storage.authenticate(token: token, now: Date())
        cache.withLock { cache in
            if cache.count >= capacity { cache.removeAll(keepingCapacity: true) }
            cache[token] = Entry(identity: identity, checkedAt: now)
        }
        return identity
    }

    private static func unexpired(_ identity: TokenIdentity?) -> TokenIdentity? {
        guard let identity else { return nil }
        if let expires = identity.expiresAt, expires <= Date() { return nil }
        return identity
    }
}
