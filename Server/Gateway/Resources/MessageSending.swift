import CoAP
import CourierActors
import CourierCore

/// How `POST /v1/msg` makes a message safe before the device hears 2.01: an embedded node
/// appends it to its log (`MessageIntake`), a node of a cluster commits it to PostgreSQL
/// (`ClusterIntake`). The other device resources read through the same storage and chats.
public protocol MessageSending: Sendable {
    var storage: any ServerStorage { get }
    var chats: ShardRegion<ChatEntity> { get }
    func send(_ context: RequestContext) async throws -> CoAPMessage
}
