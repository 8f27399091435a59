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
        return try await cached(token) { [storage] () async throws(StorageError) in try await storage.authenticate(token: token, now: Date()) }
    }

    /// The device a DTLS association proved to be: `psk:IDENTITY` names a device key,
    /// `cert:USER/DEVICE` a device by its user's and its own name (the common name of a client
    /// certificate the configured authority signed). Nil when it names no device, or the key
    /// was revoked.
    public func authenticate(peerIdentity: String) async throws(StorageError) -> TokenIdentity? {
        // Cached beside tokens: a token has no ':', so the two never share a key.
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
        if let entry = cache.withLock({ $0[key] }), now - entry.checkedAt < cacheDuration {
            return Self.unexpired(entry.identity)
        }
        let identity = try await lookup()
        cache.withLock { cache in
            if cache.count >= capacity { cache.removeAll(keepingCapacity: true) }
            cache[key] = Entry(identity: identity, checkedAt: now)
        }
        return identity
    }

    private static func unexpired(_ identity: TokenIdentity?) -> TokenIdentity? {
        guard let identity else { return nil }
        if let expires = identity.expiresAt, expires <= Date() { return nil }
        return identity
    }
}
