import CourierCore
import Foundation
import GRDB

extension SQLiteStorage {
    public func provision(_ plan: ProvisionPlan) async throws(StorageError) -> ProvisionResult {
        // Every name and index is checked before the transaction starts.
        let plan = try plan.validated()
        let now = Date()
        return try await write { [plan, chatStates] db in
            // It may add members to chats that exist.
            chatStates.forgetAll()
            var users: [ProvisionResult.User] = []
            users.reserveCapacity(plan.users.count)
            for user in plan.users {
                let userID = try Int64.fetchOne(db.cachedStatement(sql: "SELECT id FROM users WHERE name = ?"), arguments: [user.name]).map(UInt64.init)
                    ?? Self.insertUser(db, name: user.name, at: now)
                var devices: [ProvisionResult.Device] = []
                for name in user.deviceNames {
                    let deviceID = try Int64.fetchOne(db.cachedStatement(sql: "SELECT id FROM devices WHERE user_id = ? AND name = ?"), arguments: [Int64(userID), name]).map(UInt64.init)
                        ?? Self.insertDevice(db, userID: userID, name: name, at: now)
                    let token = try Self.insertToken(db, deviceID: deviceID, expiresAt: plan.tokenExpiresAt, at: now)
                    let key = plan.issueKeys ? try Self.insertDeviceKey(db, userID: userID, deviceID: deviceID, at: now) : nil
                    devices.append(.init(id: deviceID, name: name, token: token, key: key))
                }
                users.append(.init(id: userID, name: user.name, devices: devices))
            }
            var chats: [ProvisionResult.Chat] = []
            chats.reserveCapacity(plan.chats.count)
            for chat in plan.chats {
                let chatID = try Int64.fetchOne(db.cachedStatement(sql: "SELECT id FROM chats WHERE name = ?"), arguments: [chat.name]).map(UInt64.init)
                    ?? Self.insertChat(db, name: chat.name, at: now)
                let memberIDs = chat.memberIndexes.map { users[$0].id }
                let added = try memberIDs.filter { try Self.insertMember(db, chatID: chatID, userID: $0, at: now) }
                // Members from earlier provisions (another membership size) get the chat's
                // messages too: whoever checks deliveries must know them.
                let planned = Set(memberIDs)
                let earlier = try Int64.fetchAll(db.cachedStatement(sql: "SELECT user_id FROM members WHERE chat_id = ? ORDER BY user_id"), arguments: [Int64(chatID)])
                    .map(UInt64.init).filter { !planned.contains($0) }
                chats.append(.init(id: chatID, name: chat.name, memberUserIDs: memberIDs + earlier, addedUserIDs: added))
            }
            return ProvisionResult(users: users, chats: chats)
        }
    }
}
