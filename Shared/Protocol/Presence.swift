/// Who came online or went offline among the users who share a chat with a device.
public struct Presence: Hashable, Sendable {
    /// Most user ids one frame carries in both lists together; the server sends more in the next.
    public static let maxUsers = 1000

    public var onlineUserIDs: [UInt64]
    public var offlineUserIDs: [UInt64]

    public init(onlineUserIDs: [UInt64], offlineUserIDs: [UInt64]) {
        self.onlineUserIDs = onlineUserIDs
        self.offlineUserIDs = offlineUserIDs
    }
}
