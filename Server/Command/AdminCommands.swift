import ArgumentParser
import CourierApp
import CourierCore
import CourierOps
import CourierPostgres
import CourierProtocol
import CourierSQLite
import Foundation
import Logging

/// What every admin command needs: where the data is (a data directory, or a cluster's
/// PostgreSQL) and a way to print.
struct AdminOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Data directory (default: $COURIER_DATA_DIRECTORY or ./courier-data).")
    var dataDirectory: String?

    @Option(help: "A cluster's PostgreSQL, postgres://USER:PASSWORD@HOST:PORT/DATABASE (default: $COURIER_POSTGRES; none: the data directory).")
    var postgres: String?

    @Flag(help: "Print JSON instead of text.")
    var json = false

    /// The data directory, created if missing.
    func directory() throws -> String {
        let directory = dataDirectory ?? ProcessInfo.processInfo.environment["COURIER_DATA_DIRECTORY"] ?? ServerConfiguration().dataDirectory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    /// The cluster's PostgreSQL URL, if one is named here or in the environment.
    var postgresURL: String? {
        let url = postgres ?? ProcessInfo.processInfo.environment["COURIER_POSTGRES"]
        return url?.isEmpty == false ? url : nil
    }

    /// The cluster's store when a PostgreSQL is named (its schema must be this program's), else
    /// the data directory's SQLite database.
    func openStorage() async throws -> any ServerStorage {
        guard let postgresURL else { return try SQLiteStorage(path: CourierNode.storagePath(dataDirectory: directory())) }
        return try await PostgresStorage.open(url: PostgresURL(postgresURL), migrate: false, maximumConnections: 2, logger: Logger(label: "courier-server"))
    }

    func emit(text: String, json object: [String: Any]) throws {
        if json {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(text)
        }
    }
}

/// A user or chat named on the command line by name or by id.
func resolveUser(_ reference: String, in storage: some ServerStorage) async throws -> User {
    do { return try await storage.user(named: reference) } catch StorageError.notFound {
        guard let id = UInt64(reference) else { throw StorageError.notFound("user \(reference)") }
        return try await storage.user(id: id)
    }
}

func resolveChat(_ reference: String, in storage: some ServerStorage) async throws -> Chat {
    do { return try await storage.chat(named: reference) } catch StorageError.notFound {
        guard let id = UInt64(reference) else { throw StorageError.notFound("chat \(reference)") }
        return try await storage.chat(id: id)
    }
}

func resolveDevice(user: User, _ reference: String, in storage: some ServerStorage) async throws -> Device {
    let devices = try await storage.devices(ofUser: user.id)
    if let device = devices.first(where: { $0.name == reference || String($0.id) == reference }) { return device }
    throw StorageError.notFound("device \(reference) of user \(user.name)")
}

func expiry(days: Int?) throws -> Date? {
    guard let days else { return nil }
    guard (1...3650).contains(days) else { throw ValidationError("--expires-days must be 1-3650") }
    return Date().addingTimeInterval(Double(days) * 86_400)
}

func tokenJSON(_ token: IssuedToken) -> [String: Any] {
    var object: [String: Any] = ["token": token.token, "user_id": token.userID, "device_id": token.deviceID]
    if let expires = token.expiresAt { object["expires_at_ms"] = expires.milliseconds }
    return object
}

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "user", abstract: "Create and list users.", subcommands: [Add.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "The user's name (1-64 bytes).") var name: String

        func run() async throws {
            let user = try await options.openStorage().createUser(name: name)
            try options.emit(text: "user \(user.id) \(user.name)", json: ["id": user.id, "name": user.name])
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users and their devices.")
        @OptionGroup var options: AdminOptions

        func run() async throws {
            let storage = try await options.openStorage()
            var lines: [String] = []
            var objects: [[String: Any]] = []
            for user in try await storage.listUsers() {
                let devices = try await storage.devices(ofUser: user.id)
                lines.append("user \(user.id) \(user.name): " + devices.map { "\($0.name) (\($0.id))" }.joined(separator: ", "))
                objects.append(["id": user.id, "name": user.name, "devices": devices.map { ["id": $0.id, "name": $0.name] }])
            }
            try options.emit(text: lines.joined(separator: "\n"), json: ["users": objects])
        }
    }
}

struct DeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "device", abstract: "Create devices (with their first token), and issue pre-shared keys.", subcommands: [Add.self, Key.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a device for a user and print its token (shown only now).")
        @OptionGroup var options: AdminOptions
        @Argument(help: "User name or id.") var user: String
        @Argument(help: "Device name, unique for the user.") var name: String
        @Option(help: "Days until the token expires (default: never).") var expiresDays: Int?
        @Flag(help: "Also issue a pre-shared key for CoAP over DTLS (shown only now).") var psk = false

        func run() async throws {
            let storage = try await options.openStorage()
            let owner = try await resolveUser(user, in: storage)
            let device = try await storage.createDevice(userID: owner.id, name: name)
            let token = try await storage.issueToken(deviceID: device.id, expiresAt: try expiry(days: expiresDays))
            var object = tokenJSON(token)
            object["device_name"] = device.name
            object["user_name"] = owner.name
            var text = "device \(device.id) \(owner.name)/\(device.name)\ntoken \(token.token)"
            if psk {
                let key = try await storage.issueDeviceKey(deviceID: device.id)
                object.merge(keyJSON(key)) { $1 }
                text += "\npsk-identity \(key.identity)\npsk-key \(key.keyText)"
            }
            try options.emit(text: text, json: object)
        }
    }

    struct Key: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a device a new pre-shared key for CoAP over DTLS and print it (shown only now); earlier keys stay valid until `token revoke --device`.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "User name or id.") var user: String
        @Argument(help: "Device name or id.") var device: String

        func run() async throws {
            let storage = try await options.openStorage()
            let owner = try await resolveUser(user, in: storage)
            let device = try await resolveDevice(user: owner, self.device, in: storage)
            let key = try await storage.issueDeviceKey(deviceID: device.id)
            try options.emit(text: "psk-identity \(key.identity)\npsk-key \(key.keyText)", json: keyJSON(key))
        }
    }
}

func keyJSON(_ key: DeviceKey) -> [String: Any] {
    ["psk_identity": key.identity, "psk_key": key.keyText, "device_id": key.deviceID, "user_id": key.userID]
}

struct InviteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "invite",
        abstract: "Print a one-time sign-in code for a user (created when the code is used, if need be).",
        discussion: "The person runs `courier login --invite CODE --server HOST` and gets a device of their own. The code is shown only now (the server keeps its hash), works once, and expires after --valid-hours."
    )
    @OptionGroup var options: AdminOptions
    @Argument(help: "User name.") var user: String
    @Option(help: "Hours until the code expires (1-720).") var validHours: Int = 24
    /// For tests of expiry, which cannot wait an hour.
    @Option(help: .hidden) var validSeconds: Int?

    func run() async throws {
        guard (1...720).contains(validHours) else { throw ValidationError("--valid-hours must be 1-720") }
        if let validSeconds, validSeconds < 1 { throw ValidationError("--valid-seconds must be at least 1") }
        let storage = try await options.openStorage()
        let lifetime = validSeconds.map(Double.init) ?? Double(validHours) * 3600
        let invite = try await storage.createInvite(userName: user, expiresAt: Date().addingTimeInterval(lifetime))
        try options.emit(
            text: "invite for \(invite.userName), valid until \(ISO8601DateFormatter().string(from: invite.expiresAt))\ncode \(invite.code)",
            json: ["code": invite.code, "user_name": invite.userName, "expires_at_ms": invite.expiresAt.milliseconds]
        )
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "Issue and revoke device tokens.", subcommands: [Issue.self, Revoke.self])

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue another token for a device (shown only now).")
        @OptionGroup var options: AdminOptions
        @Argument(help: "User name or id.") var user: String
        @Argument(help: "Device name or id.") var device: String
        @Option(help: "Days until the token expires (default: never).") var expiresDays: Int?

        func run() async throws {
            let storage = try await options.openStorage()
            let owner = try await resolveUser(user, in: storage)
            let target = try await resolveDevice(user: owner, device, in: storage)
            let token = try await storage.issueToken(deviceID: target.id, expiresAt: try expiry(days: expiresDays))
            try options.emit(text: "token \(token.token)", json: tokenJSON(token))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke one token, or every token of a device.",
            discussion: "A running server stops accepting a revoked token within its token cache time (tokenCacheSeconds, 5 s by default)."
        )
        @OptionGroup var options: AdminOptions
        @Argument(help: "The token, or USER DEVICE with --device.") var arguments: [String]
        @Flag(help: "Revoke every token of the device USER DEVICE.") var device = false

        func validate() throws {
            guard arguments.count == (device ? 2 : 1) else { throw ValidationError(device ? "expected USER DEVICE" : "expected one TOKEN") }
        }

        func run() async throws {
            let storage = try await options.openStorage()
            if device {
                let owner = try await resolveUser(arguments[0], in: storage)
                let target = try await resolveDevice(user: owner, arguments[1], in: storage)
                let count = try await storage.revokeTokens(deviceID: target.id, now: Date())
                try options.emit(text: "revoked \(count) token(s) of \(owner.name)/\(target.name)", json: ["revoked": count])
            } else {
                guard try await storage.revokeToken(arguments[0], now: Date()) else {
                    throw ValidationError("no active token like that")
                }
                try options.emit(text: "revoked", json: ["revoked": 1])
            }
        }
    }
}

struct ChatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chat", abstract: "Create chats, add members, list chats, show history.", subcommands: [Create.self, AddMembers.self, List.self, History.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a chat.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "The chat's name.") var name: String
        @Option(name: .customLong("member"), help: "A member to add (user name or id); repeatable.") var members: [String] = []

        func run() async throws {
            let storage = try await options.openStorage()
            var users: [User] = []
            for member in members { users.append(try await resolveUser(member, in: storage)) }
            let chat = try await storage.createChat(name: name)
            for user in users { try await storage.addMember(chatID: chat.id, userID: user.id) }
            try options.emit(text: "chat \(chat.id) \(chat.name)", json: ["id": chat.id, "name": chat.name, "members": users.map(\.id)])
        }
    }

    struct AddMembers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Add members to a chat.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "Chat name or id.") var chat: String
        @Argument(help: "User names or ids.") var users: [String]

        func run() async throws {
            let storage = try await options.openStorage()
            let target = try await resolveChat(chat, in: storage)
            for user in users {
                try await storage.addMember(chatID: target.id, userID: try await resolveUser(user, in: storage).id)
            }
            let members = try await storage.members(ofChat: target.id)
            try options.emit(text: "chat \(target.id) \(target.name): \(members.count) member(s)", json: ["id": target.id, "members": members.sorted()])
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List chats with their members and message counts.")
        @OptionGroup var options: AdminOptions

        func run() async throws {
            let chats = try await options.openStorage().listChats()
            try options.emit(
                text: chats.map { "chat \($0.chat.id) \($0.chat.name): \($0.chat.lastSequence) message(s); members \($0.memberNames.joined(separator: ", "))" }.joined(separator: "\n"),
                json: ["chats": chats.map { ["id": $0.chat.id, "name": $0.chat.name, "last_sequence": $0.chat.lastSequence, "members": $0.memberNames] }]
            )
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a chat's messages in sequence order.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "Chat name or id.") var chat: String
        @Option(help: "Show messages after this sequence number.") var after: UInt64 = 0
        @Option(help: "At most this many messages (1-100000).") var limit = 1000

        func validate() throws {
            guard (1...100_000).contains(limit) else { throw ValidationError("--limit must be 1-100000") }
        }

        func run() async throws {
            let storage = try await options.openStorage()
            let target = try await resolveChat(chat, in: storage)
            let messages = try await storage.history(chatID: target.id, afterSequence: after, limit: limit)
            try options.emit(
                text: messages.map { "#\($0.sequence) [\(ISO8601DateFormatter().string(from: Date(milliseconds: $0.acceptedAtMilliseconds)))] user \($0.senderUserID)/device \($0.senderDeviceID): \($0.change.map { "(\(changeWords($0))) " } ?? "")\($0.deleted ? "(deleted)" : $0.text)" }.joined(separator: "\n"),
                json: ["chat": target.id, "messages": messages.map(messageJSON)]
            )
        }
    }
}

func messageJSON(_ message: StoredMessage) -> [String: Any] {
    var object: [String: Any] = [
        "server_message_id": message.serverMessageID, "chat_id": message.chatID, "sequence": message.sequence,
        "sender_user_id": message.senderUserID, "sender_device_id": message.senderDeviceID,
        "client_message_id": message.clientMessageID, "text": message.text,
        "client_sent_at_ms": message.clientSentAtMilliseconds, "accepted_at_ms": message.acceptedAtMilliseconds,
    ]
    if let change = message.change { object["change"] = changeWords(change) }
    if message.editedAtMilliseconds != 0 { object["edited_at_ms"] = message.editedAtMilliseconds }
    if message.deleted { object["deleted"] = true }
    return object
}

/// A change as the admin commands print it: "edit 3", "delete 3", "rename".
func changeWords(_ change: MessageChange) -> String {
    switch change {
    case .edit(let sequence): "edit \(sequence)"
    case .delete(let sequence): "delete \(sequence)"
    case .rename: "rename"
    }
}

struct Search: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Search message text by whole words, best matches first.")
    @OptionGroup var options: AdminOptions
    @Argument(help: "Words that must all appear.") var words: [String]
    @Option(help: "Only chats this user (name or id) is a member of.") var user: String?
    @Option(help: "Only this chat (name or id).") var chat: String?
    @Option(help: "At most this many results (1-1000).") var limit = 20

    func validate() throws {
        guard (1...1000).contains(limit) else { throw ValidationError("--limit must be 1-1000") }
    }

    func run() async throws {
        let storage = try await options.openStorage()
        var userID: UInt64?
        if let user { userID = try await resolveUser(user, in: storage).id }
        var chatID: UInt64?
        if let chat { chatID = try await resolveChat(chat, in: storage).id }
        let hits = try await storage.search(words: words.joined(separator: " "), userID: userID, chatID: chatID, limit: limit)
        try options.emit(
            text: hits.map { "\($0.chatName) #\($0.message.sequence) \($0.senderName): \($0.snippet)" }.joined(separator: "\n"),
            json: ["hits": hits.map { ["chat": $0.chatName, "sender": $0.senderName, "snippet": $0.snippet, "message": messageJSON($0.message)] }]
        )
    }
}

struct AdminTokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin-token",
        abstract: "Print the admin API's bearer token, making it first if there is none.",
        discussion: """
            The token lives in <data directory>/admin.token (mode 0600); `serve` reads it at start. \
            Use it as `Authorization: Bearer TOKEN` on POST /admin/v1/provision.
            """
    )
    @OptionGroup var options: AdminOptions

    func run() throws {
        let token = try AdminToken.ensure(dataDirectory: options.directory())
        try options.emit(text: token, json: ["token": token])
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print counts of users, devices, chats, messages and tokens.")
    @OptionGroup var options: AdminOptions

    func run() async throws {
        let stats = try await options.openStorage().statistics()
        try options.emit(
            text: """
                users \(stats.users)
                devices \(stats.devices)
                chats \(stats.chats)
                messages \(stats.messages)
                active tokens \(stats.activeTokens)
                schema \(stats.schemaVersion)
                """,
            json: ["users": stats.users, "devices": stats.devices, "chats": stats.chats, "messages": stats.messages, "active_tokens": stats.activeTokens, "schema": stats.schemaVersion]
        )
    }
}
