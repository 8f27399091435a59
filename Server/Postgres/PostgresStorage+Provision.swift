import CourierCore
import Foundation
import PostgresNIO

extension PostgresStorage {
    /// The whole plan in a handful of set-based statements (arrays through `unnest`), not a
    /// round trip per row: a simulated fleet provisions tens of thousands of devices at once.
    public func provision(_ plan: ProvisionPlan) async throws(StorageError) -> ProvisionResult {
        let plan = try plan.validated()
        let now = Date().milliseconds
        let expires = plan.tokenExpiresAt?.milliseconds
        return try await transaction { connection in
            // Users, by name: the existing ones are reused.
            let userNames = plan.users.map(\.name)
            try await connection.query("""
                INSERT INTO users (name, created_at_ms) SELECT unnest(\(userNames)::TEXT[]), \(now) ON CONFLICT (name) DO NOTHING
                """, logger: self.logger)
            var userIDs: [String: UInt64] = [:]
            for try await (id, name) in try await connection.query("SELECT id, name FROM users WHERE name = ANY(\(userNames))", logger: self.logger).decode((Int64, String).self) {
                userIDs[name] = id.id
            }

            // Devices, by user and name, and a new token for each device of the plan.
            let deviceOwners = plan.users.flatMap { user in user.deviceNames.map { _ in userIDs[user.name]!.database } }
            let deviceNames = plan.users.flatMap(\.deviceNames)
            try await connection.query("""
                INSERT INTO devices (user_id, name, created_at_ms)
                SELECT owner, name, \(now) FROM unnest(\(deviceOwners)::BIGINT[], \(deviceNames)::TEXT[]) AS planned(owner, name)
                ON CONFLICT (user_id, name) DO NOTHING
                """, logger: self.logger)
            var deviceIDs: [DeviceName: UInt64] = [:]
            for try await (id, owner, name) in try await connection.query("""
                SELECT d.id, d.user_id, d.name FROM devices d
                JOIN unnest(\(deviceOwners)::BIGINT[], \(deviceNames)::TEXT[]) AS planned(owner, name) ON d.user_id = planned.owner AND d.name = planned.name
                """, logger: self.logger).decode((Int64, Int64, String).self) {
                deviceIDs[DeviceName(userID: owner.id, name: name)] = id.id
            }
            var users: [ProvisionResult.User] = []
            var tokenDevices: [Int64] = [], tokenHashes: [String] = []
            for user in plan.users {
                let userID = userIDs[user.name]!
                let devices = user.deviceNames.map { name in
                    let deviceID = deviceIDs[DeviceName(userID: userID, name: name)]!
                    return ProvisionResult.Device(
                        id: deviceID, name: name, token: DeviceToken.generate(),
                        key: plan.issueKeys ? DeviceKey.generate(userID: userID, deviceID: deviceID) : nil
                    )
                }
                for device in devices {
                    tokenDevices.append(device.id.database)
                    tokenHashes.append(Self.hex(DeviceToken.hash(device.token)))
                }
                users.append(.init(id: userID, name: user.name, devices: devices))
            }
            try await connection.query("""
                INSERT INTO tokens (hash, device_id, created_at_ms, expires_at_ms)
                SELECT decode(hash, 'hex'), device, \(now), \(expires) FROM unnest(\(tokenHashes)::TEXT[], \(tokenDevices)::BIGINT[]) AS issued(hash, device)
                """, logger: self.logger)
            if plan.issueKeys {
                let keys = users.flatMap(\.devices).compactMap(\.key)
                try await connection.query("""
                    INSERT INTO device_keys (identity, device_id, key, created_at_ms)
                    SELECT identity, device, convert_to(key, 'UTF8'), \(now)
                    FROM unnest(\(keys.map(\.identity))::TEXT[], \(keys.map(\.deviceID.database))::BIGINT[], \(keys.map(\.keyText))::TEXT[]) AS issued(identity, device, key)
                    """, logger: self.logger)
            }

            // Chats, by name, and their planned members; what a member was before stays.
            let chatNames = plan.chats.map(\.name)
            try await connection.query("""
                INSERT INTO chats (name, created_at_ms) SELECT unnest(\(chatNames)::TEXT[]), \(now) ON CONFLICT (name) DO NOTHING
                """, logger: self.logger)
            var chatIDs: [String: UInt64] = [:]
            for try await (id, name) in try await connection.query("SELECT id, name FROM chats WHERE name = ANY(\(chatNames))", logger: self.logger).decode((Int64, String).self) {
                chatIDs[name] = id.id
            }
            let memberChats = plan.chats.flatMap { chat in chat.memberIndexes.map { _ in chatIDs[chat.name]!.database } }
            let memberUsers = plan.chats.flatMap { chat in chat.memberIndexes.map { users[$0].id.database } }
            var added: Set<MemberKey> = []
            for try await (chatID, userID) in try await connection.query("""
                INSERT INTO members (chat_id, user_id, joined_at_ms)
                SELECT chat, member, \(now) FROM unnest(\(memberChats)::BIGINT[], \(memberUsers)::BIGINT[]) AS planned(chat, member)
                ON CONFLICT (chat_id, user_id) DO NOTHING RETURNING chat_id, user_id
                """, logger: self.logger).decode((Int64, Int64).self) {
                added.insert(MemberKey(chatID: chatID.id, userID: userID.id))
            }
            var allMembers: [UInt64: [UInt64]] = [:]
            for try await (chatID, userID) in try await connection.query("""
                SELECT chat_id, user_id FROM members WHERE chat_id = ANY(\(Array(Set(chatIDs.values.map(\.database))))) ORDER BY chat_id, user_id
                """, logger: self.logger).decode((Int64, Int64).self) {
                allMembers[chatID.id, default: []].append(userID.id)
            }
            // A new membership counts as added once, where the plan first names it.
            var counted: Set<MemberKey> = []
            let chats = plan.chats.map { chat -> ProvisionResult.Chat in
                let chatID = chatIDs[chat.name]!
                let memberIDs = chat.memberIndexes.map { users[$0].id }
                let addedIDs = memberIDs.filter {
                    let key = MemberKey(chatID: chatID, userID: $0)
                    return added.contains(key) && counted.insert(key).inserted
                }
                // Members from earlier provisions (another membership size) get the chat's
                // messages too: whoever checks deliveries must know them.
                let planned = Set(memberIDs)
                return .init(id: chatID, name: chat.name, memberUserIDs: memberIDs + (allMembers[chatID] ?? []).filter { !planned.contains($0) }, addedUserIDs: addedIDs)
            }
            return ProvisionResult(users: users, chats: chats)
        }
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0f)]] }, as: UTF8.self)
    }

    private struct DeviceName: Hashable {
        var userID: UInt64
        var name: String
    }

    private struct MemberKey: Hashable {
        var chatID: UInt64
        var userID: UInt64
    }
}
