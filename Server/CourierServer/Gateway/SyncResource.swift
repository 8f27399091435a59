import CoAP
import CourierProtocol
import CourierStorage
import Logging

/// `POST /v1/sync`: what a device that only polls is missing (see `HistorySync`).
struct SyncResource: Sendable {
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
        do {
            let response = try await HistorySync.answer(syncRequest, for: identity, storage: storage)
            return .response(.content, payload: response.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
        } catch {
            logger.warning("sync failed", metadata: ["device": "\(identity.deviceID)", "error": "\(error)"])
            return MessageIntake.error(.serviceUnavailable, .overloaded, "try again", retryAfter: intake.limits.retryAfterSeconds)
        }
    }
}
