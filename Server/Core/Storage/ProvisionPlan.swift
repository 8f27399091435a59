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
    /// Each device also gets a new pre-shared key for CoAP over DTLS.
    public var issueKeys = false

    public init(users: [User], chats: [Chat], tokenExpiresAt: Date?, issueKeys: Bool = false) {
        self.users = users
        self.chats = chats
        self.tokenExpiresAt = tokenExpiresAt
        self.issueKeys = issueKeys
    }
}

extension ProvisionPlan {
    /// The plan with every name trimmed and checked (`StorageRules.validName`) and every member
    /// index checked; `.invalid` for the first that is not. Stores check before they begin.
    public func validated() throws(StorageError) -> ProvisionPlan {
        var plan = self
        for index in plan.users.indices {
            plan.users[index].name = try StorageRules.validName(plan.users[index].name, of: "user")
            for device in plan.users[index].deviceNames.indices {
                plan.users[index].deviceNames[device] = try StorageRules.validName(plan.users[index].deviceNames[device], of: "device")
            }
        }
        for index in plan.chats.indices {
            plan.chats[index].name = try StorageRules.validName(plan.chats[index].name, of: "chat")
            guard plan.chats[index].memberIndexes.allSatisfy(plan.users.indices.contains) else {
                throw .invalid("chat \(plan.chats[index].name) names a member that is not in the plan")
            }
        }
        return plan
    }
}
