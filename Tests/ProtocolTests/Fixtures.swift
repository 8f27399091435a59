import CourierProtocol

/// Sample values covering every type, every enum case, and the edges of each field's range.
enum Fixtures {
    static let sendMessages = [
        SendMessage(clientMessageID: "c-1", chatID: 7, text: "hello", clientSentAtMs: 1_700_000_000_123),
        SendMessage(clientMessageID: "ü", chatID: .max, text: "", clientSentAtMs: .min),
        SendMessage(
            clientMessageID: String(repeating: "x", count: SendMessage.maxClientMessageIDBytes),
            chatID: 1,
            text: "multi\nline, emoji 🚀, NUL \u{0}",
            clientSentAtMs: -1
        ),
        SendMessage(clientMessageID: "e-1", chatID: 7, text: "hello again", clientSentAtMs: 2, change: .edit(sequence: 1)),
        SendMessage(clientMessageID: "d-1", chatID: 7, text: "", clientSentAtMs: 3, change: .delete(sequence: .max)),
        SendMessage(clientMessageID: "r-1", chatID: 7, text: "Lunch plans", clientSentAtMs: 4, change: .rename),
    ]

    static let changes: [MessageChange] = [.edit(sequence: 1), .delete(sequence: .max), .rename]

    static let presences = [
        Presence(onlineUserIDs: [], offlineUserIDs: []),
        Presence(onlineUserIDs: [1, .max], offlineUserIDs: [7]),
    ]

    static let sendResults = [
        SendResult(clientMessageID: "c-1", serverMessageID: 42, chatID: 7, acceptedAtMs: 1_700_000_000_456),
        SendResult(
            clientMessageID: "c-2",
            serverMessageID: .max,
            chatID: .max,
            chatSequence: .max,
            acceptedAtMs: .max
        ),
    ]

    static let chatMessages = [
        ChatMessage(
            serverMessageID: 42,
            chatID: 7,
            chatSequence: 1,
            senderUserID: 3,
            senderDeviceID: 5,
            clientMessageID: "c-1",
            text: "hello",
            clientSentAtMs: 1_700_000_000_123,
            acceptedAtMs: 1_700_000_000_456
        ),
        ChatMessage(
            serverMessageID: .max,
            chatID: .max,
            chatSequence: .max,
            senderUserID: .max,
            senderDeviceID: .max,
            clientMessageID: "d",
            text: "",
            clientSentAtMs: .min,
            acceptedAtMs: 0
        ),
        ChatMessage(
            serverMessageID: 43, chatID: 7, chatSequence: 2, senderUserID: 3, senderDeviceID: 5, clientMessageID: "e-1",
            text: "hello again", clientSentAtMs: 2, acceptedAtMs: 3, change: .edit(sequence: 1)
        ),
        ChatMessage(
            serverMessageID: 44, chatID: 7, chatSequence: 3, senderUserID: 3, senderDeviceID: 5, clientMessageID: "c-2",
            text: "", clientSentAtMs: 2, acceptedAtMs: 3, editedAtMs: 4, deleted: true
        ),
    ]

    static let cursors = [
        ChatCursor(chatID: 7, sequence: 0),
        ChatCursor(chatID: .max, sequence: .max),
    ]

    static let receipts = [
        DeliveryReceipt(chatID: 7, chatSequence: 1, serverMessageID: 42, clientMessageID: "c-1"),
    ]

    static let pushes = chatMessages.map(Push.message) + receipts.map(Push.delivered) + presences.map(Push.presence)

    static let pushAcks = [
        PushAck(cursors: []),
        PushAck(cursors: cursors),
    ]

    static let syncRequests = [
        SyncRequest(have: []),
        SyncRequest(have: cursors, limit: 500),
    ]

    static let syncResponses = [
        SyncResponse(messages: [], more: false),
        SyncResponse(messages: chatMessages, more: true),
    ]

    static let hellos = [
        Hello(token: "", have: [], clientName: ""),
        Hello(token: "tok-3f2a", have: cursors, clientName: "courier/1.0"),
    ]

    static let welcomes = [
        Welcome(
            userID: 3,
            deviceID: 5,
            heartbeatIntervalMs: 30_000,
            serverTimeMs: 1_700_000_000_000,
            maxFrameBytes: 65_536
        ),
        Welcome(userID: .max, deviceID: .max, heartbeatIntervalMs: .max, serverTimeMs: .min, maxFrameBytes: .max),
    ]

    static let heartbeats = [
        Heartbeat(sentAtMs: 0),
        Heartbeat(sentAtMs: 1_700_000_000_000),
        Heartbeat(sentAtMs: .min),
    ]

    static let errorCodes: [WireErrorCode] = [
        .unspecified, .badRequest, .unauthorized, .forbidden, .notFound, .tooLarge, .overloaded,
        .rateLimited, .internalError, .storageFull, .conflict, .sessionReplaced, .unrecognized(999),
    ]

    static let errors = errorCodes.map { code in
        WireError(code: code, message: "something about \(code)", retryAfterSeconds: 0)
    } + [WireError(code: .overloaded, message: "", retryAfterSeconds: .max)]

    static let chatInfos = [
        ChatInfo(chatID: 7, name: "general", lastSequence: 0, memberNames: [], memberCount: 0),
        ChatInfo(
            chatID: .max,
            name: String(repeating: "n", count: NameRule.maxBytes),
            lastSequence: .max,
            memberNames: ["alice", "bob", "zoë 🚀"],
            memberCount: .max,
            title: "Lunch plans 🍜"
        ),
    ]

    static let chatLists = [
        ChatList(chats: [], more: false),
        ChatList(chats: chatInfos, more: true),
    ]

    static let createChats = [
        CreateChat(name: "general"),
        CreateChat(name: "lunch · harbour", memberNames: ["alice", "bob"]),
        CreateChat(name: "x", memberNames: (0..<CreateChat.maxMemberNames).map { "user-\($0)" }),
    ]

    static let joinChats = [
        JoinChat(name: "general"),
        JoinChat(name: "inner space"),
    ]

    static let invites = [
        InviteToChat(chatID: 7, userName: "bob"),
        InviteToChat(chatID: .max, userName: String(repeating: "é", count: NameRule.maxBytes / 2)),
    ]

    static let leaveChats = [LeaveChat(chatID: 7), LeaveChat(chatID: .max)]

    static let chatMembersRequests = [ChatMembersRequest(chatID: 7), ChatMembersRequest(chatID: .max)]

    static let chatMembers = [
        ChatMembers(chatID: 7, members: [], more: false),
        ChatMembers(chatID: 7, members: [ChatMember(userID: 1, name: "alice"), ChatMember(userID: .max, name: "bob · harbour", online: true)], more: true),
    ]

    static let redeemInvites = [
        RedeemInvite(code: "Zk3hA9-_x0pQ1LmN2oP3qR", deviceName: "laptop"),
        RedeemInvite(code: String(repeating: "c", count: RedeemInvite.maxCodeBytes), deviceName: "bob's phone"),
    ]

    static let signedIns = [
        SignedIn(token: "Zk3hA9-_x0pQ1LmN2oP3qR", userID: 1, deviceID: 2, userName: "alice"),
        SignedIn(token: "t", userID: .max, deviceID: .max, userName: String(repeating: "é", count: NameRule.maxBytes / 2)),
    ]

    static let historyRequests = [
        HistoryRequest(chatID: 7),
        HistoryRequest(chatID: .max, beforeSequence: .max, limit: .max),
    ]

    static let historyResponses = [
        HistoryResponse(messages: [], more: false),
        HistoryResponse(messages: chatMessages, more: true),
    ]

    static let searchRequests = [
        SearchRequest(words: "lunch"),
        SearchRequest(words: "\"harbour\" OR NEAR(x)", chatID: .max, limit: .max),
    ]

    static let searchHits = chatMessages.map {
        SearchHit(message: $0, chatName: "general", senderName: "alice", snippet: "[lunch] at the …")
    } + [SearchHit(message: chatMessages[0], chatName: "", senderName: "", snippet: "")]

    static let searchResponses = [
        SearchResponse(hits: []),
        SearchResponse(hits: searchHits),
    ]

    static let clientFrames =
        hellos.map(ClientFrame.hello) + pushAcks.map(ClientFrame.ack)
        + heartbeats.map(ClientFrame.heartbeat) + syncRequests.map(ClientFrame.sync)

    static let serverFrames =
        welcomes.map(ServerFrame.welcome) + pushes.map(ServerFrame.push)
        + heartbeats.map(ServerFrame.heartbeat) + syncResponses.map(ServerFrame.sync)
        + errors.map(ServerFrame.error)
}
