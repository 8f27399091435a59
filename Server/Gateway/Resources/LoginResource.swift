import CoAP
import CourierCore
import CourierProtocol
import Foundation
import NIOCore

/// `POST /v1/login` (no token): a one-time invite code (`courier-server invite`) becomes a
/// device of the invite's user and that device's token. An unknown, used or expired code is
/// 4.01 and creates nothing. Anyone may ask, so attempts are limited per source address (4.29
/// with Max-Age beyond the burst), and a refusal is kept shorter than the request that drew
/// it (amplification).
struct LoginResource: Sendable {
    let storage: any ServerStorage
    let attempts: DeviceRateLimiter

    /// Five attempts at once from one address, then one every 10 s: enough for a person who
    /// mistypes, far too few to guess a 128-bit code.
    init(storage: any ServerStorage, attempts: DeviceRateLimiter = DeviceRateLimiter(ratePerSecond: 0.1, burst: 5, maxDevices: 100_000)) {
        self.storage = storage
        self.attempts = attempts
    }

    func login(_ context: RequestContext) async throws -> CoAPMessage {
        if case .limited(let seconds) = attempts.take(Self.sourceKey(context.request.peer)) {
            // Short: the answer to a stranger must not outgrow the request (amplification).
            throw Refusal(.tooManyRequests, .rateLimited, "wait", retryAfter: seconds)
        }
        let redeem = try context.body(RedeemInvite.self)
        let redeemed: RedeemedInvite?
        do {
            redeemed = try await storage.redeemInvite(code: redeem.code, deviceName: redeem.deviceName, now: Date())
        } catch .alreadyExists {
            throw Refusal(.conflict, .conflict, "device name taken")
        } catch .invalid(let reason) {
            throw Refusal(.badRequest, .badRequest, reason)
        } catch {
            throw Refusal.unavailable("redeem an invite", cause: error)
        }
        guard let redeemed else { throw Refusal(.unauthorized, .unauthorized, "bad invite") }
        let signedIn = SignedIn(token: redeemed.token.token, userID: redeemed.user.id, deviceID: redeemed.device.id, userName: redeemed.user.name)
        return .response(.created, payload: signedIn.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }

    /// The source's IP address as a bucket key (its port does not matter: a guesser can use
    /// any). IPv6 addresses are hashed.
    static func sourceKey(_ peer: SocketAddress) -> UInt64 {
        if case .v4(let address) = peer { return UInt64(address.address.sin_addr.s_addr) }
        var hasher = Hasher()
        hasher.combine(peer.ipAddress ?? "")
        return UInt64(bitPattern: Int64(hasher.finalize()))
    }
}
