import CourierStorage

/// One user: knows the user's devices and hands every new message of the user's chats to each
/// of them.
public actor UserEntity: ShardedEntity {
    public struct Context: Sendable {
        public var storage: any CourierStorage
        public var devices: ShardRegion<DeviceEntity>
    }

    public let id: UInt64
    private let context: Context
    private var deviceIDs: [UInt64]

    private init(id: UInt64, context: Context, deviceIDs: [UInt64]) {
        self.id = id
        self.context = context
        self.deviceIDs = deviceIDs
    }

    public static func activate(id: UInt64, context: Context) async throws -> UserEntity {
        UserEntity(id: id, context: context, deviceIDs: try await context.storage.devices(ofUser: id).map(\.id))
    }

    /// Hands newly stored messages (of one chat, in sequence order) to every device of this user.
    public func deliver(_ messages: [StoredMessage]) async throws {
        for deviceID in deviceIDs {
            try await context.devices.withEntity(deviceID) { try await $0.notify(messages) }
        }
    }
}
