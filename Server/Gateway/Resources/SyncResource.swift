import CoAP
import CourierCore
import CourierProtocol

/// `POST /v1/sync`: what a device that only polls is missing (see `HistorySync`).
struct SyncResource: Sendable {
    let storage: any ServerStorage

    func sync(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let request = try context.body(SyncRequest.self)
        let response: SyncResponse
        do {
            response = try await HistorySync.answer(request, for: identity, storage: storage)
        } catch {
            throw Refusal.unavailable("sync", cause: error)
        }
        return .response(.content, payload: response.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }
}
