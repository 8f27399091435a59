import CourierCore

/// The JSON of a provision's answer: users in plan order with their devices, then chats.
struct ProvisionResponse: Encodable {
    struct User: Encodable {
        var id: UInt64
        var name: String
        var devices: [Device]
    }

    struct Device: Encodable {
        var id: UInt64
        var name: String
        var token: String
        var pskIdentity: String?
        var pskKey: String?

        enum CodingKeys: String, CodingKey {
            case id, name, token
            case pskIdentity = "psk_identity"
            case pskKey = "psk_key"
        }
    }

    struct Chat: Encodable {
        var id: UInt64
        var name: String
        var memberUserIDs: [UInt64]

        enum CodingKeys: String, CodingKey {
            case id, name
            case memberUserIDs = "member_user_ids"
        }
    }

    var users: [User]
    var chats: [Chat]

    init(_ result: ProvisionResult) {
        users = result.users.map { User(id: $0.id, name: $0.name, devices: $0.devices.map {
            Device(id: $0.id, name: $0.name, token: $0.token, pskIdentity: $0.key?.identity, pskKey: $0.key?.keyText)
        }) }
        chats = result.chats.map { Chat(id: $0.id, name: $0.name, memberUserIDs: $0.memberUserIDs) }
    }
}
