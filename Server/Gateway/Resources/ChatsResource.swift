import CoAP
import CourierActors
import CourierCore
import CourierProtocol

/// `GET /v1/chats`, `POST /v1/chats`, `POST /v1/chats/join` and `POST /v1/chats/invite`: a
/// user's chats, and becoming a member of one (chats are open by name). Membership goes to
/// storage first; then the chat's live actor, if any, hears of it, so the new member can send
/// and receive at once instead of after the actor's next reload of its members.
struct ChatsResource: Sendable {
    let storage: any ServerStorage
    let chats: ShardRegion<ChatEntity>
    /// Of these users, those with a live push session (for member lists).
    let online: @Sendable ([UInt64]) async -> Set<UInt64>

    /// `GET /v1/chats[?after=CHAT_ID]`: a page of the caller's chats, in id order.
    func list(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        var page = try await storage.chatSummaries(
            ofUser: identity.userID, afterChatID: try Self.after(context.message), limit: ChatList.maxChats + 1, maxMemberNames: ChatInfo.maxMemberNames
        )
        let more = page.count > ChatList.maxChats
        if more { page.removeLast() }
        return .response(.content, payload: ChatList(chats: page.map(ChatInfo.init), more: more).serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }

    /// `POST /v1/chats`: a new chat with the caller and the named users as members, or nothing.
    func create(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let create = try context.body(CreateChat.self)
        var memberIDs = [identity.userID]
        for name in create.memberNames { memberIDs.append(try await user(named: name).id) }
        // A chat that did not exist has no live actor to tell.
        let chat = try await storage.createChat(name: create.name, memberIDs: memberIDs)
        return try await info(chat.id, .created)
    }

    /// `POST /v1/chats/join`: the caller becomes a member of the chat of that name.
    func join(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let join = try context.body(JoinChat.self)
        let chat: Chat
        do {
            chat = try await storage.chat(named: join.name)
        } catch .notFound {
            throw Refusal(.notFound, .notFound, "no chat \(join.name)")
        }
        try await admit(identity.userID, to: chat.id)
        return try await info(chat.id, .changed)
    }

    /// `POST /v1/chats/invite`: a member makes another user a member.
    func invite(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let invite = try context.body(InviteToChat.self)
        try await storage.requireMember(identity.userID, of: invite.chatID)
        try await admit(try await user(named: invite.userName).id, to: invite.chatID)
        return try await info(invite.chatID, .changed)
    }

    /// `POST /v1/chats/leave`: the caller is no longer a member (already not: the same answer).
    func leave(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let leave = try context.body(LeaveChat.self)
        do {
            _ = try await storage.removeMember(chatID: leave.chatID, userID: identity.userID)
        } catch .notFound {
            throw Refusal(.notFound, .notFound, "no chat \(leave.chatID)")
        }
        _ = try? await chats.withLiveEntity(leave.chatID) { await $0.memberRemoved(identity.userID) }
        return .response(.changed)
    }

    /// `POST /v1/chats/members`: a chat's members with their names (a member only).
    func members(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let request = try context.body(ChatMembersRequest.self)
        try await storage.requireMember(identity.userID, of: request.chatID)
        let found = try await storage.memberUsers(ofChat: request.chatID, limit: ChatMembers.maxMembers + 1)
        let users = found.prefix(ChatMembers.maxMembers)
        let online = await online(users.map(\.id))
        let answer = ChatMembers(
            chatID: request.chatID, members: users.map { ChatMember(userID: $0.id, name: $0.name, online: online.contains($0.id)) },
            more: found.count > ChatMembers.maxMembers
        )
        return .response(.content, payload: answer.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }

    private func user(named name: String) async throws -> User {
        do {
            return try await storage.user(named: name)
        } catch .notFound {
            throw Refusal(.notFound, .notFound, "no user \(name)")
        }
    }

    private func admit(_ userID: UInt64, to chatID: UInt64) async throws {
        try await storage.addMember(chatID: chatID, userID: userID)
        // A chat actor that is not live reads its members from storage when it starts; if this
        // fails, the actor's periodic reload finds the member a little later.
        _ = try? await chats.withLiveEntity(chatID) { await $0.memberAdded(userID) }
    }

    private func info(_ chatID: UInt64, _ code: CoAPCode) async throws -> CoAPMessage {
        let summary = try await storage.chatSummary(id: chatID, maxMemberNames: ChatInfo.maxMemberNames)
        return .response(code, payload: ChatInfo(summary).serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }

    /// The `after=CHAT_ID` query option; 0 when absent.
    private static func after(_ message: CoAPMessage) throws -> UInt64 {
        guard let option = message.uriQuery.first(where: { $0.hasPrefix("after=") }) else { return 0 }
        guard let after = UInt64(option.dropFirst("after=".count)) else {
            throw Refusal(.badRequest, .badRequest, "after= takes a chat id")
        }
        return after
    }
}

extension ChatInfo {
    init(_ summary: ChatSummary) {
        self.init(
            chatID: summary.chat.id, name: summary.chat.name, lastSequence: summary.chat.lastSequence,
            memberNames: summary.memberNames, memberCount: UInt32(clamping: summary.memberCount), title: summary.chat.title
        )
    }
}
