import CoAP
import CourierProtocol
import CourierStorage
import Logging

/// `POST /v1/sync`: what a device that only polls is missing. For each chat of the device's
/// user, the messages after the device's cursor (the one it states, else its stored delivery
/// cursor), in sequence order with no gaps, up to a limit; `more` says to ask again. Chats the
/// user is not a member of are never answered, whatever the request names.
struct SyncResource: Sendable {
    /// Messages per response when the device names no limit, and the most it may ask for.
    static let defaultLimit = 100
    static let maxLimit = 500

    let intake: MessageIntake
    let storage: any CourierStorage
    let logger: Logger

    func sync(_ request: IncomingRequest) async -> CoAPMessage {
        let identity: TokenIdentity
        switch await intake.authenticate(request) {
        case .identified(let found): identity = found
        case .refused(let response): return response
        }
        let syncRequest: SyncRequest
        do {
            syncRequest = try SyncRequest(serializedBytes: request.message.payload)
        } catch {
            return MessageIntake.error(.badRequest, .badRequest, "SyncRequest: \(error)")
        }
        let limit = syncRequest.limit == 0 ? Self.defaultLimit : min(Int(syncRequest.limit), Self.maxLimit)
        var stated: [UInt64: UInt64] = [:]
        for cursor in syncRequest.have { stated[cursor.chatID] = max(stated[cursor.chatID] ?? 0, cursor.sequence) }

        do {
            var messages: [ChatMessage] = []
            var more = false
            for chat in try await storage.chats(ofUser: identity.userID) {
                let after: UInt64
                if let cursor = stated[chat.id] {
                    after = cursor
                } else {
                    after = try await storage.deliveryCursor(deviceID: identity.deviceID, chatID: chat.id)
                }
                guard chat.lastSequence > after else { continue }
                let room = limit - messages.count
                guard room > 0 else {
                    more = true
                    break
                }
                let found = try await storage.history(chatID: chat.id, afterSequence: after, limit: room)
                messages += found.map(Self.chatMessage)
                if UInt64(found.count) < chat.lastSequence - after { more = true }
            }
            let response = SyncResponse(messages: messages, more: more)
            return .response(.content, payload: response.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
        } catch {
            logger.warning("sync failed", metadata: ["device": "\(identity.deviceID)", "error": "\(error)"])
            return MessageIntake.error(.serviceUnavailable, .overloaded, "try again", retryAfter: intake.limits.retryAfterSeconds)
        }
    }

    static func chatMessage(_ message: StoredMessage) -> ChatMessage {
        ChatMessage(
            serverMessageID: message.serverMessageID, chatID: message.chatID, chatSequence: message.sequence,
            senderUserID: message.senderUserID, senderDeviceID: message.senderDeviceID,
            clientMessageID: message.clientMessageID, text: message.text,
            clientSentAtMs: message.clientSentAtMilliseconds, acceptedAtMs: message.acceptedAtMilliseconds
        )
    }
}
