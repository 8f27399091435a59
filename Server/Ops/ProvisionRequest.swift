import CourierCore
import Foundation

/// The body of `POST /admin/v1/provision`, checked field by field:
///
///     {"prefix":"sim","users":N,"devices_per_user":D,"chats":C,"members_per_chat":M,"token_days":1,"psk":false}
///
/// It names users `<prefix>-u<i>` (i in 0..<N), each with devices `d<j>` (j in 0..<D), and chats
/// `<prefix>-c<k>` (k in 0..<C) whose members are users `(k*M + j) % N` for j in 0..<M.
struct ProvisionRequest: Sendable, Equatable {
    static let maxBodyBytes = 64 * 1024
    static let maxUsers = 100_000
    static let maxDevicesPerUser = 16
    static let maxDevices = 200_000
    static let maxChats = 100_000
    static let maxMembersPerChat = 10_000
    /// Memberships one provision may make sure of (chats × members_per_chat), so that one
    /// request cannot hold the database's write lock for hours.
    static let maxMemberships = 1_000_000
    static let maxTokenDays = 3650

    var prefix: String
    var users: Int
    var devicesPerUser: Int
    var chats = 0
    /// Required, and checked, only when there are chats.
    var membersPerChat: Int?
    var tokenDays = 1
    /// Each device also gets a pre-shared key for CoAP over DTLS (`psk_identity`, `psk_key`).
    var psk = false

    func validate() throws(AdminRefusal) {
        func check(_ condition: Bool, _ message: String) throws(AdminRefusal) {
            if !condition { throw .badRequest(message) }
        }
        try check((1...32).contains(prefix.count) && prefix.unicodeScalars.allSatisfy(Self.prefixCharacters.contains), "prefix must be 1-32 characters of a-z, 0-9 and -")
        try check((1...Self.maxUsers).contains(users), "users must be 1-\(Self.maxUsers)")
        try check((1...Self.maxDevicesPerUser).contains(devicesPerUser), "devices_per_user must be 1-\(Self.maxDevicesPerUser)")
        try check(users * devicesPerUser <= Self.maxDevices, "users × devices_per_user must be at most \(Self.maxDevices)")
        try check((0...Self.maxChats).contains(chats), "chats must be 0-\(Self.maxChats)")
        if chats > 0 {
            guard let membersPerChat else { throw .badRequest("members_per_chat is required when chats > 0") }
            let most = min(users, Self.maxMembersPerChat)
            try check((1...most).contains(membersPerChat), "members_per_chat must be 1-\(most) (at most users, and at most \(Self.maxMembersPerChat))")
            try check(chats * membersPerChat <= Self.maxMemberships, "chats × members_per_chat must be at most \(Self.maxMemberships)")
        }
        try check((1...Self.maxTokenDays).contains(tokenDays), "token_days must be 1-\(Self.maxTokenDays)")
    }

    /// The users, devices and chats this request names, with tokens expiring `token_days` after `now`.
    func plan(now: Date) -> ProvisionPlan {
        let membersPerChat = membersPerChat ?? 0
        let deviceNames = (0..<devicesPerUser).map { "d\($0)" }
        return ProvisionPlan(
            users: (0..<users).map { .init(name: "\(prefix)-u\($0)", deviceNames: deviceNames) },
            chats: (0..<chats).map { chat in
                .init(name: "\(prefix)-c\(chat)", memberIndexes: (0..<membersPerChat).map { (chat * membersPerChat + $0) % users })
            },
            tokenExpiresAt: now.addingTimeInterval(Double(tokenDays) * 86_400),
            issueKeys: psk
        )
    }

    private static let prefixCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789-".unicodeScalars)

    /// The JSON object: known fields only, each a whole number (or, for prefix, a string).
    private struct Fields: Decodable {
        var request: ProvisionRequest

        private struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        static let names = ["prefix", "users", "devices_per_user", "chats", "members_per_chat", "token_days", "psk"]

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            if let unknown = container.allKeys.map(\.stringValue).sorted().first(where: { !Self.names.contains($0) }) {
                throw AdminRefusal.badRequest("unknown field '\(unknown)'; the fields are \(Self.names.joined(separator: ", "))")
            }
            func number(_ name: String) throws -> Int? {
                do {
                    return try container.decodeIfPresent(Int.self, forKey: Key(stringValue: name))
                } catch {
                    throw AdminRefusal.badRequest("\(name) must be a whole number")
                }
            }
            func required(_ name: String) throws -> Int {
                guard let value = try number(name) else { throw AdminRefusal.badRequest("\(name) is required") }
                return value
            }
            let prefix: String?
            do {
                prefix = try container.decodeIfPresent(String.self, forKey: Key(stringValue: "prefix"))
            } catch {
                throw AdminRefusal.badRequest("prefix must be a string")
            }
            guard let prefix else { throw AdminRefusal.badRequest("prefix is required") }
            let psk: Bool?
            do {
                psk = try container.decodeIfPresent(Bool.self, forKey: Key(stringValue: "psk"))
            } catch {
                throw AdminRefusal.badRequest("psk must be true or false")
            }
            request = ProvisionRequest(
                prefix: prefix, users: try required("users"), devicesPerUser: try required("devices_per_user"),
                chats: try number("chats") ?? 0, membersPerChat: try number("members_per_chat"), tokenDays: try number("token_days") ?? 1,
                psk: psk ?? false
            )
        }
    }
}

extension ProvisionRequest {
    /// Decodes and checks a body; the refusal names the first field that is wrong.
    init(json body: [UInt8]) throws(AdminRefusal) {
        guard body.count <= Self.maxBodyBytes else { throw .badRequest("the body is larger than \(Self.maxBodyBytes / 1024) KiB") }
        do {
            self = try JSONDecoder().decode(Fields.self, from: Data(body)).request
        } catch let refusal as AdminRefusal {
            throw refusal
        } catch DecodingError.typeMismatch(_, let context) where context.codingPath.isEmpty {
            throw .badRequest("the body must be a JSON object")
        } catch {
            throw .badRequest("the body is not JSON")
        }
        try validate()
    }
}
