import CourierStorage

/// One device: learns of every new message in its user's chats and keeps, per chat, the
/// highest sequence it has been told of; the push session (issue 5) delivers from here.
public actor DeviceEntity: ShardedEntity {
    public struct Context: Sendable {
        public var storage: any CourierStorage
    }

    public let id: UInt64
    private let context: Context
    /// chat id -> highest sequence stored there that this device has been told of. Bounded by
    /// the number of chats the user is in.
    private var newest: [UInt64: UInt64] = [:]

    private init(id: UInt64, context: Context) {
        self.id = id
        self.context = context
    }

    public static func activate(id: UInt64, context: Context) async throws -> DeviceEntity {
        _ = try await context.storage.device(id: id)
        return DeviceEntity(id: id, context: context)
    }

    public func notify(_ messages: [StoredMessage]) async throws {
        for message in messages {
            newest[message.chatID] = max(newest[message.chatID] ?? 0, message.sequence)
        }
    }
}
