import CourierStorage

/// One device: learns of every new message in its user's chats. It keeps, per chat, the
/// highest sequence it has been told of and the device's delivery cursor, so the push session
/// knows what the device still lacks.
public actor DeviceEntity: ShardedEntity {
    public struct Context: Sendable {
        public var storage: any CourierStorage
    }

    public let id: UInt64
    private let context: Context
    /// chat id -> highest sequence stored there that this device has been told of. Bounded by
    /// the number of chats the user is in.
    private var newest: [UInt64: UInt64] = [:]
    private(set) var notifications = 0

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
        notifications += messages.count
    }

    /// Chats with messages newer than the device's delivery cursor, with the newest sequence.
    public func undelivered() async throws -> [UInt64: UInt64] {
        var result: [UInt64: UInt64] = [:]
        for (chat, sequence) in newest where try await context.storage.deliveryCursor(deviceID: id, chatID: chat) < sequence {
            result[chat] = sequence
        }
        return result
    }
}
