import CoAP
import CourierProtocol
import NIOCore

/// The requests a user makes besides sending: chats, history, search (CoAP, with the device
/// token). One exchange each; the caller shows a failure and the user tries again.
public struct ServerCalls: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var code: CoAPCode?
        public var message: String
        public var description: String { code.map { "\($0) \(message)" } ?? message }
    }

    let endpoint: CoAPEndpoint
    let server: SocketAddress
    let token: String

    public init(endpoint: CoAPEndpoint, server: SocketAddress, token: String) {
        self.endpoint = endpoint
        self.server = server
        self.token = token
    }

    public func chats() async throws -> [ChatInfo] {
        try ChatList(serializedBytes: try await call(.get, "/v1/chats", nil)).chats
    }

    public func createChat(name: String, members: [String]) async throws -> ChatInfo {
        try ChatInfo(serializedBytes: try await call(.post, "/v1/chats", CreateChat(name: name, memberNames: members).serializedBytes()))
    }

    public func join(name: String) async throws -> ChatInfo {
        try ChatInfo(serializedBytes: try await call(.post, "/v1/chats/join", JoinChat(name: name).serializedBytes()))
    }

    public func invite(chatID: UInt64, user: String) async throws -> ChatInfo {
        try ChatInfo(serializedBytes: try await call(.post, "/v1/chats/invite", InviteToChat(chatID: chatID, userName: user).serializedBytes()))
    }

    /// Leaves a chat (a chat one is not in: the same answer).
    public func leave(chatID: UInt64) async throws {
        _ = try await call(.post, "/v1/chats/leave", LeaveChat(chatID: chatID).serializedBytes())
    }

    /// The chat's members with their names.
    public func members(chatID: UInt64) async throws -> ChatMembers {
        try ChatMembers(serializedBytes: try await call(.post, "/v1/chats/members", ChatMembersRequest(chatID: chatID).serializedBytes()))
    }

    /// The newest `limit` messages before `beforeSequence` (0: the newest of all), ascending.
    public func history(chatID: UInt64, beforeSequence: UInt64 = 0, limit: UInt32 = 0) async throws -> HistoryResponse {
        try HistoryResponse(serializedBytes: try await call(.post, "/v1/history", HistoryRequest(chatID: chatID, beforeSequence: beforeSequence, limit: limit).serializedBytes()))
    }

    public func search(words: String, chatID: UInt64 = 0, limit: UInt32 = 0) async throws -> [SearchHit] {
        try SearchResponse(serializedBytes: try await call(.post, "/v1/search", SearchRequest(words: words, chatID: chatID, limit: limit).serializedBytes())).hits
    }

    private func call(_ method: CoAPCode, _ path: String, _ body: [UInt8]?) async throws -> [UInt8] {
        let request = CoAPMessage.request(method, path: path, query: ["t=\(token)"], payload: body ?? [], contentFormat: body == nil ? nil : CoAPContentFormat.protobuf)
        let response: CoAPMessage
        do {
            response = try await endpoint.request(request, to: server)
        } catch {
            throw Failure(code: nil, message: "no answer from the server (\(server.ipAddress ?? "?"):\(server.port ?? 0))")
        }
        guard response.code.codeClass == 2 else {
            throw Failure(code: response.code, message: (try? WireError(serializedBytes: response.payload))?.message ?? "refused")
        }
        return response.payload
    }
}
