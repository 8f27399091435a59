import Foundation

/// Users with their devices, and chats with their members, to make sure of by name in one
/// transaction (`ServerStorage.provision`): whatever exists by that name is reused, whatever is
/// missing is created, and every device gets a new token (its older tokens stay valid).
public struct ProvisionPlan: Sendable, Equatable {
    public struct User: Sendable, Equatable {
        public var name: String
        public var deviceNames: [String]
        public init(name: String, deviceNames: [String]) {
            self.name = name
            self.deviceNames = deviceNames
        }
    }

    public struct Chat: Sendable, Equatable {
        public var name: String
        /// Members, as positions in `users`.
        public var memberIndexes: [Int]
        public init(name: String, memberIndexes: [Int]) {
            self.name = name
            self.memberIndexes = memberIndexes
        }
    }

    public var users: [User]
    public var chats: [Chat]
    /// When the new tokens expire; nil: never.
    public var tokenExpiresAt: Date?

    public init(users: [User], chats: [Chat], tokenExpiresAt: Date?) {
        self.users = users
        self.chats = chats
        self.tokenExpiresAt = tokenExpiresAt
    }
}
