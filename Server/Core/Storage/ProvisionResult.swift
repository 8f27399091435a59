import Foundation

/// What a provision made sure of, in the order of its plan.
public struct ProvisionResult: Sendable, Equatable {
    public struct User: Sendable, Equatable {
        public var id: UInt64
        public var name: String
        public var devices: [Device]

        public init(id: UInt64, name: String, devices: [Device]) {
            self.id = id
            self.name = name
            self.devices = devices
        }
    }

    public struct Device: Sendable, Equatable {
        public var id: UInt64
        public var name: String
        /// Issued by this provision; shown only now.
        public var token: String
        /// Issued by this provision when the plan asked for keys.
        public var key: DeviceKey?

        public init(id: UInt64, name: String, token: String, key: DeviceKey? = nil) {
            self.id = id
            self.name = name
            self.token = token
            self.key = key
        }
    }

    public struct Chat: Sendable, Equatable {
        public var id: UInt64
        public var name: String
        /// Every member of this chat: the plan's, in the plan's order, then any others it
        /// already had (from an earlier provision), by id.
        public var memberUserIDs: [UInt64]
        /// Those of them that were not members before this provision.
        public var addedUserIDs: [UInt64]

        public init(id: UInt64, name: String, memberUserIDs: [UInt64], addedUserIDs: [UInt64]) {
            self.id = id
            self.name = name
            self.memberUserIDs = memberUserIDs
            self.addedUserIDs = addedUserIDs
        }
    }

    public var users: [User]
    public var chats: [Chat]

    public init(users: [User], chats: [Chat]) {
        self.users = users
        self.chats = chats
    }
}
