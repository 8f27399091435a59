import CourierActors
import CourierCore
import Foundation
import Logging

/// The admin interface on the operations listener: `POST /admin/v1/provision` makes sure of a
/// fleet of users, devices and chats in one transaction and hands back fresh device tokens.
/// Every request carries `Authorization: Bearer <admin token>` (see `AdminToken`).
public struct AdminAPI: Sendable {
    let token: String
    let storage: any ServerStorage
    let chats: ShardRegion<ChatEntity>
    let metrics: ServerMetrics
    let logger: Logger

    public init(token: String, storage: any ServerStorage, chats: ShardRegion<ChatEntity>, metrics: ServerMetrics, logger: Logger) {
        self.token = token
        self.storage = storage
        self.chats = chats
        self.metrics = metrics
        self.logger = logger
    }

    /// Checks an `Authorization` header value.
    func authorize(_ header: String?) throws(AdminRefusal) {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else {
            throw .unauthorized("an Authorization: Bearer header with the admin token is required")
        }
        let presented = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard AdminToken.matches(presented, token) else { throw .unauthorized("wrong admin token") }
    }

    /// `POST /admin/v1/provision`: the response body (JSON) for a request body.
    func provision(body: [UInt8]) async throws(AdminRefusal) -> [UInt8] {
        let started = ContinuousClock.now
        do {
            let request = try ProvisionRequest(json: body)
            let result: ProvisionResult
            do {
                result = try await storage.provision(request.plan(now: Date()))
            } catch {
                switch error {
                case .invalid(let why): throw AdminRefusal.badRequest(why)
                case .unavailable, .full: throw AdminRefusal.unavailable("storage: \(error); nothing was changed, try again later")
                default: throw AdminRefusal.failed("storage: \(error); nothing was changed")
                }
            }
            var added = 0
            for chat in result.chats where !chat.addedUserIDs.isEmpty {
                added += chat.addedUserIDs.count
                // As for a join: a live chat actor hears of its new members now, so they can send
                // and receive at once. A chat that is not live reads its members when it starts;
                // if this fails, the actor's periodic reload finds them a little later.
                _ = try? await chats.withLiveEntity(chat.id) { entity in
                    for userID in chat.addedUserIDs { await entity.memberAdded(userID) }
                }
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let response = try encoder.encode(ProvisionResponse(result))
            metrics.countProvision(result: "ok")
            logger.info("admin provision", metadata: [
                "prefix": "\(request.prefix)", "users": "\(result.users.count)", "devices": "\(result.users.count * request.devicesPerUser)",
                "chats": "\(result.chats.count)", "membersAdded": "\(added)", "responseBytes": "\(response.count)",
                "duration": "\(ContinuousClock.now - started)",
            ])
            return Array(response)
        } catch let refusal as AdminRefusal {
            let outcome = if case .badRequest = refusal { "refused" } else { "failed" }
            metrics.countProvision(result: outcome)
            logger.notice("admin provision refused", metadata: ["reason": "\(refusal.message)"])
            throw refusal
        } catch {
            metrics.countProvision(result: "failed")
            throw .failed("\(error)")
        }
    }
}
