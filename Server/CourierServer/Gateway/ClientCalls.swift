import CoAP
import CourierProtocol
import CourierStorage

/// A refusal of a device's request: the CoAP code and the Error body it is answered with.
struct Refusal: Error {
    var code: CoAPCode
    var wireCode: WireErrorCode
    var message: String
    var retryAfter: UInt32 = 0

    init(_ code: CoAPCode, _ wireCode: WireErrorCode, _ message: String, retryAfter: UInt32 = 0) {
        self.code = code
        self.wireCode = wireCode
        self.message = message
        self.retryAfter = retryAfter
    }

    var response: CoAPMessage { MessageIntake.error(code, wireCode, message, retryAfter: retryAfter) }
}

/// The frame of every call of the client API (chats, history, search): the token names the
/// caller, the body decodes as its type, and whatever the handler throws is answered once, here,
/// with its CoAP code and Error body.
struct ClientCalls: Sendable {
    let intake: MessageIntake

    var storage: any CourierStorage { intake.storage }

    /// Answers an authenticated request with no body.
    func answer(_ request: IncomingRequest, _ handle: (TokenIdentity) async throws -> CoAPMessage) async -> CoAPMessage {
        let identity: TokenIdentity
        switch await intake.authenticate(request) {
        case .identified(let found): identity = found
        case .refused(let response): return response
        }
        do {
            return try await handle(identity)
        } catch let refusal as Refusal {
            return refusal.response
        } catch {
            return refusal(for: error, path: request.message.uriPath).response
        }
    }

    /// Answers an authenticated request whose body must decode as `Body` (else 4.00).
    func answer<Body: WireMessage>(_ request: IncomingRequest, decoding _: Body.Type, _ handle: (TokenIdentity, Body) async throws -> CoAPMessage) async -> CoAPMessage {
        await answer(request) { identity in
            let body: Body
            do {
                body = try Body(serializedBytes: request.message.payload)
            } catch {
                throw Refusal(.badRequest, .badRequest, "\(error)")
            }
            return try await handle(identity, body)
        }
    }

    /// Goes on only if the chat exists (else 4.04) and `userID` is a member (else 4.03).
    func requireMember(_ userID: UInt64, of chatID: UInt64) async throws {
        guard try await storage.members(ofChat: chatID).contains(userID) else {
            do {
                _ = try await storage.chat(id: chatID)
            } catch .notFound {
                throw Refusal(.notFound, .notFound, "no chat \(chatID)")
            }
            throw Refusal(.forbidden, .forbidden, "not a member of chat \(chatID)")
        }
    }

    /// A storage error as the device sees it; what the device cannot act on is logged.
    private func refusal(for error: any Error, path: [String]) -> Refusal {
        switch error as? StorageError {
        case .notFound(let what)?: return Refusal(.notFound, .notFound, "no \(what)")
        case .alreadyExists(let what)?: return Refusal(.conflict, .conflict, "\(what) exists already")
        case .invalid(let why)?: return Refusal(.badRequest, .badRequest, why)
        case .full?:
            intake.logger.error("storage full", metadata: ["path": "\(path.joined(separator: "/"))"])
            return Refusal(.serviceUnavailable, .storageFull, "storage is full; nothing was changed", retryAfter: 30)
        case .rejected?, .sequenceConflict?:
            intake.logger.error("client call failed", metadata: ["path": "\(path.joined(separator: "/"))", "error": "\(error)"])
            return Refusal(.internalServerError, .internalError, "nothing was changed")
        case .unavailable?, nil:
            intake.logger.warning("client call failed", metadata: ["path": "\(path.joined(separator: "/"))", "error": "\(error)"])
            return Refusal(.serviceUnavailable, .overloaded, "try again", retryAfter: intake.limits.retryAfterSeconds)
        }
    }
}
