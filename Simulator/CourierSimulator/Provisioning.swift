import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The fleet's users, devices and chats, created (or found again) through the server's admin
/// API: `POST /admin/v1/provision` on the operations listener, with the admin token.
public struct Provisioning: Sendable {
    public struct Request: Codable, Sendable, Equatable {
        public var prefix: String
        public var users: Int
        public var devicesPerUser: Int
        public var chats: Int
        public var membersPerChat: Int
        public var tokenDays: Int
        /// Each device also gets a pre-shared key for CoAP over DTLS.
        public var psk: Bool

        public init(prefix: String, users: Int, devicesPerUser: Int, chats: Int, membersPerChat: Int, tokenDays: Int = 1, psk: Bool = false) {
            self.prefix = prefix
            self.users = users
            self.devicesPerUser = devicesPerUser
            self.chats = chats
            self.membersPerChat = membersPerChat
            self.tokenDays = tokenDays
            self.psk = psk
        }
    }

    public struct Fleet: Codable, Sendable, Equatable {
        public struct User: Codable, Sendable, Equatable {
            public var id: UInt64
            public var name: String
            public var devices: [Device]
        }

        public struct Device: Codable, Sendable, Equatable {
            public var id: UInt64
            public var name: String
            public var token: String
            /// The device's pre-shared key, when the request asked for keys.
            public var pskIdentity: String?
            public var pskKey: String?

            enum CodingKeys: String, CodingKey {
                case id, name, token
                case pskIdentity = "psk_identity"
                case pskKey = "psk_key"
            }
        }

        public struct Chat: Codable, Sendable, Equatable {
            public var id: UInt64
            public var name: String
            public var memberUserIDs: [UInt64]

            enum CodingKeys: String, CodingKey {
                case id, name
                case memberUserIDs = "member_user_ids"
            }
        }

        public var users: [User]
        public var chats: [Chat]
    }

    public enum Failure: Error, CustomStringConvertible {
        case refused(status: Int, message: String)
        case unreadable(String)
        case unreachable(String)

        public var description: String {
            switch self {
            case .refused(let status, let message): "the server refused provisioning (HTTP \(status)): \(message)"
            case .unreadable(let detail): "the server's provisioning answer is unreadable: \(detail)"
            case .unreachable(let detail): "cannot reach the admin API: \(detail)"
            }
        }
    }

    /// The operations listener, e.g. http://127.0.0.1:8081.
    public var adminURL: URL
    public var adminToken: String

    public init(adminURL: URL, adminToken: String) {
        self.adminURL = adminURL
        self.adminToken = adminToken
    }

    public func provision(_ request: Request) async throws -> Fleet {
        var http = URLRequest(url: adminURL.appendingPathComponent("admin/v1/provision"))
        http.httpMethod = "POST"
        http.setValue("Bearer \(adminToken)", forHTTPHeaderField: "Authorization")
        http.setValue("application/json", forHTTPHeaderField: "Content-Type")
        // Creating 20,000 devices in one transaction takes seconds, not minutes.
        http.timeoutInterval = 300
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        http.httpBody = try encoder.encode(request)

        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: http)
        } catch {
            throw Failure.unreachable("\(adminURL): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else {
            let message = (try? JSONDecoder().decode([String: String].self, from: data))?["error"] ?? String(decoding: data.prefix(300), as: UTF8.self)
            throw Failure.refused(status: status, message: message)
        }
        let fleet: Fleet
        do {
            fleet = try JSONDecoder().decode(Fleet.self, from: data)
        } catch {
            throw Failure.unreadable("\(error)")
        }
        guard fleet.users.count == request.users, fleet.users.allSatisfy({ $0.devices.count == request.devicesPerUser }), fleet.chats.count == request.chats else {
            throw Failure.unreadable("asked for \(request.users) users with \(request.devicesPerUser) devices and \(request.chats) chats, got \(fleet.users.count) users and \(fleet.chats.count) chats")
        }
        return fleet
    }

    /// The admin token from a file the server wrote (`<data directory>/admin.token`).
    public static func readToken(path: String) throws -> String {
        let text = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw Failure.unreadable("the admin token file \(path) is empty") }
        return text
    }
}
