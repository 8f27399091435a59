import CourierStorage

/// One user: knows the user's devices and hands every new message of the user's chats to each
/// of them that is live (has a push session). A device that is not live catches up from its
/// delivery cursor when it connects.
public actor UserEntity: ShardedEntity {
    public struct Context: Sendable {
        public var storage: any CourierStorage
        public var devices: ShardRegion<DeviceEntity>
    }

    public let id: UInt64
    private let context: Context
    /// Bounded by the user's devices.
    private var deviceIDs: Set<UInt64>

    private init(id: UInt64, context: Context, deviceIDs: Set<UInt64>) {
        self.id = id
        self.context = context
        self.deviceIDs = deviceIDs
    }

    public static func activate(id: UInt64, context: Context) async throws -> UserEntity {
        UserEntity(id: id, context: context, deviceIDs: Set(try await context.storage.devices(ofUser: id).map(\.id)))
    }

    /// Hands newly stored messages (of one chat, in sequence order) to every device of this user.
    public func deliver(_ messages: [StoredMessage]) async throws {
        for deviceID in deviceIDs {
            // A device that cannot be reached now catches up by replay when it reconnects.
            _ = try? await context.devices.withLiveEntity(deviceID) { await $0.notify(messages) }
        }
    }

    /// A device of this user opened a session: it may be one added since this actor loaded.
    public func deviceConnected(_ deviceID: UInt64) {
        deviceIDs.insert(deviceID)
    }
}
