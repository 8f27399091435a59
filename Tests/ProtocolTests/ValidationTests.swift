import CourierProtocol
import XCTest

/// Required fields: a decoded value is one the rest of Courier can trust.
final class ValidationTests: XCTestCase {
    func testSendMessageRequiresClientMessageIDAndChat() {
        let valid = Fixtures.sendMessages[0]
        var noID = valid
        noID.clientMessageID = ""
        assertRejects(noID, .missingField(type: "SendMessage", field: "client_message_id"))
        var noChat = valid
        noChat.chatID = 0
        assertRejects(noChat, .missingField(type: "SendMessage", field: "chat_id"))
        var longID = valid
        longID.clientMessageID = String(repeating: "é", count: SendMessage.maxClientMessageIDBytes / 2 + 1)
        assertRejects(
            longID,
            .invalidField(type: "SendMessage", field: "client_message_id", reason: "longer than 128 bytes")
        )
    }

    func testEmptyBytesAreAnEmptyMessage() {
        XCTAssertThrowsError(try SendMessage(serializedBytes: [])) { error in
            XCTAssertEqual(error as? WireDecodingError, .missingField(type: "SendMessage", field: "client_message_id"))
        }
        XCTAssertEqual(try Heartbeat(serializedBytes: []), Heartbeat(sentAtMs: 0))
        XCTAssertEqual(try WireError(serializedBytes: []), WireError(code: .unspecified, message: ""))
        XCTAssertEqual(try PushAck(serializedBytes: []), PushAck(cursors: []))
    }

    func testSendResultRequiresIDs() {
        let valid = Fixtures.sendResults[0]
        var noServerID = valid
        noServerID.serverMessageID = 0
        assertRejects(noServerID, .missingField(type: "SendResult", field: "server_message_id"))
        var noChat = valid
        noChat.chatID = 0
        assertRejects(noChat, .missingField(type: "SendResult", field: "chat_id"))
        var noSequence = valid
        noSequence.chatSequence = 0
        XCTAssertEqual(try SendResult(serializedBytes: noSequence.serializedBytes()), noSequence)
    }

    func testChatMessageRequiresEveryIDAndASequence() {
        let valid = Fixtures.chatMessages[0]
        let cases: [(WritableKeyPath<ChatMessage, UInt64>, String)] = [
            (\.serverMessageID, "server_message_id"),
            (\.chatID, "chat_id"),
            (\.chatSequence, "chat_sequence"),
            (\.senderUserID, "sender_user_id"),
            (\.senderDeviceID, "sender_device_id"),
        ]
        for (keyPath, field) in cases {
            var message = valid
            message[keyPath: keyPath] = 0
            assertRejects(message, .missingField(type: "ChatMessage", field: field))
        }
        var noClientID = valid
        noClientID.clientMessageID = ""
        assertRejects(noClientID, .missingField(type: "ChatMessage", field: "client_message_id"))
    }

    func testCursorRequiresChat() {
        assertRejects(ChatCursor(chatID: 0, sequence: 3), .missingField(type: "ChatCursor", field: "chat_id"))
    }

    func testDeliveryReceiptRequiresEveryField() {
        let valid = Fixtures.receipts[0]
        var noSequence = valid
        noSequence.chatSequence = 0
        assertRejects(noSequence, .missingField(type: "DeliveryReceipt", field: "chat_sequence"))
        var noClientID = valid
        noClientID.clientMessageID = ""
        assertRejects(noClientID, .missingField(type: "DeliveryReceipt", field: "client_message_id"))
    }

    func testWelcomeRequiresIDsAndLimits() {
        let valid = Fixtures.welcomes[0]
        var noUser = valid
        noUser.userID = 0
        assertRejects(noUser, .missingField(type: "Welcome", field: "user_id"))
        var noDevice = valid
        noDevice.deviceID = 0
        assertRejects(noDevice, .missingField(type: "Welcome", field: "device_id"))
        var noHeartbeat = valid
        noHeartbeat.heartbeatIntervalMs = 0
        assertRejects(noHeartbeat, .missingField(type: "Welcome", field: "heartbeat_interval_ms"))
        var noFrameLimit = valid
        noFrameLimit.maxFrameBytes = 0
        assertRejects(noFrameLimit, .missingField(type: "Welcome", field: "max_frame_bytes"))
    }

    func testEmptyOneofsAreMissingFields() {
        XCTAssertThrowsError(try Push(serializedBytes: [])) { error in
            XCTAssertEqual(error as? WireDecodingError, .missingField(type: "Push", field: "kind"))
        }
        XCTAssertThrowsError(try ClientFrame(serializedBytes: [])) { error in
            XCTAssertEqual(error as? WireDecodingError, .missingField(type: "ClientFrame", field: "frame"))
        }
        XCTAssertThrowsError(try ServerFrame(serializedBytes: [])) { error in
            XCTAssertEqual(error as? WireDecodingError, .missingField(type: "ServerFrame", field: "frame"))
        }
    }

    /// A frame kind added by a newer peer (here field 50) is not a frame this version can act on.
    func testUnknownFrameKindIsAMissingFrame() {
        XCTAssertThrowsError(try ClientFrame(serializedBytes: [0x92, 0x03, 0x00])) { error in
            XCTAssertEqual(error as? WireDecodingError, .missingField(type: "ClientFrame", field: "frame"))
        }
    }

    func testNestedErrorsNameTheFullPath() {
        let badCursor = ChatCursor(chatID: 0, sequence: 1)
        assertRejects(
            ClientFrame.sync(SyncRequest(have: [Fixtures.cursors[0], Fixtures.cursors[1], badCursor])),
            .missingField(type: "ClientFrame", field: "sync.have[2].chat_id")
        )
        assertRejects(
            ClientFrame.ack(PushAck(cursors: [badCursor])),
            .missingField(type: "ClientFrame", field: "ack.cursors[0].chat_id")
        )
        assertRejects(
            ClientFrame.hello(Hello(token: "t", have: [badCursor], clientName: "")),
            .missingField(type: "ClientFrame", field: "hello.have[0].chat_id")
        )
        var badMessage = Fixtures.chatMessages[0]
        badMessage.chatSequence = 0
        assertRejects(
            ServerFrame.push(.message(badMessage)),
            .missingField(type: "ServerFrame", field: "push.message.chat_sequence")
        )
        assertRejects(
            ServerFrame.sync(SyncResponse(messages: [Fixtures.chatMessages[1], badMessage], more: false)),
            .missingField(type: "ServerFrame", field: "sync.messages[1].chat_sequence")
        )
        var welcome = Fixtures.welcomes[0]
        welcome.userID = 0
        assertRejects(ServerFrame.welcome(welcome), .missingField(type: "ServerFrame", field: "welcome.user_id"))
        // An empty oneof nested inside a frame: ServerFrame.push set to an empty Push.
        XCTAssertThrowsError(try ServerFrame(serializedBytes: [0x12, 0x00])) { error in
            XCTAssertEqual(error as? WireDecodingError, .missingField(type: "ServerFrame", field: "push.kind"))
        }
    }

    func testNamesFollowTheRule() {
        for good in ["general", "x", "lunch · harbour", "zoë 🚀", "a b", String(repeating: "n", count: NameRule.maxBytes)] {
            XCTAssertNil(NameRule.problem(with: good), good)
        }
        let bad: [(String, String)] = [
            ("", "empty"),
            (String(repeating: "é", count: NameRule.maxBytes / 2 + 1), "longer than 64 bytes"),
            ("tab\there", "holds a control or format character"),
            ("line\nbreak", "holds a control or format character"),
            ("nul\u{0}", "holds a control or format character"),
            ("zero\u{200B}width", "holds a control or format character"),
            (" leading", "starts or ends with whitespace"),
            ("trailing\u{00A0}", "starts or ends with whitespace"),
            ("\u{3000}ideographic", "starts or ends with whitespace"),
        ]
        for (name, problem) in bad {
            XCTAssertEqual(NameRule.problem(with: name), problem, name.debugDescription)
        }
    }

    func testChatRequestsRequireValidNames() {
        assertRejects(CreateChat(name: ""), .missingField(type: "CreateChat", field: "name"))
        assertRejects(
            CreateChat(name: " general"),
            .invalidField(type: "CreateChat", field: "name", reason: "starts or ends with whitespace")
        )
        assertRejects(
            CreateChat(name: "general", memberNames: ["alice", "bo\u{7}b"]),
            .invalidField(type: "CreateChat", field: "member_names[1]", reason: "holds a control or format character")
        )
        assertRejects(
            CreateChat(name: "general", memberNames: ["alice", ""]),
            .invalidField(type: "CreateChat", field: "member_names[1]", reason: "empty")
        )
        assertRejects(
            CreateChat(name: "general", memberNames: (0...CreateChat.maxMemberNames).map { "u\($0)" }),
            .invalidField(type: "CreateChat", field: "member_names", reason: "more than 100 names")
        )
        assertRejects(JoinChat(name: ""), .missingField(type: "JoinChat", field: "name"))
        assertRejects(
            JoinChat(name: String(repeating: "j", count: 65)),
            .invalidField(type: "JoinChat", field: "name", reason: "longer than 64 bytes")
        )
        assertRejects(InviteToChat(chatID: 0, userName: "bob"), .missingField(type: "InviteToChat", field: "chat_id"))
        assertRejects(InviteToChat(chatID: 7, userName: ""), .missingField(type: "InviteToChat", field: "user_name"))
    }

    func testARedeemNeedsACodeOfAtMost64BytesAndAValidDeviceName() {
        assertRejects(RedeemInvite(code: "", deviceName: "laptop"), .missingField(type: "RedeemInvite", field: "code"))
        assertRejects(
            RedeemInvite(code: String(repeating: "c", count: 65), deviceName: "laptop"),
            .invalidField(type: "RedeemInvite", field: "code", reason: "longer than 64 bytes")
        )
        assertRejects(RedeemInvite(code: "abc", deviceName: ""), .missingField(type: "RedeemInvite", field: "device_name"))
        assertRejects(
            RedeemInvite(code: "abc", deviceName: "lap\u{7}top"),
            .invalidField(type: "RedeemInvite", field: "device_name", reason: "holds a control or format character")
        )
        assertRejects(SignedIn(token: "", userID: 1, deviceID: 2, userName: "a"), .missingField(type: "SignedIn", field: "token"))
    }

    func testChatInfoRequiresIDAndName() {
        var noID = Fixtures.chatInfos[0]
        noID.chatID = 0
        assertRejects(noID, .missingField(type: "ChatInfo", field: "chat_id"))
        var noName = Fixtures.chatInfos[0]
        noName.name = ""
        assertRejects(noName, .missingField(type: "ChatInfo", field: "name"))
        assertRejects(
            ChatList(chats: [Fixtures.chatInfos[1], noName], more: false),
            .missingField(type: "ChatList", field: "chats[1].name")
        )
    }

    func testHistoryAndSearchRequireTheirFields() {
        assertRejects(HistoryRequest(chatID: 0, beforeSequence: 5), .missingField(type: "HistoryRequest", field: "chat_id"))
        assertRejects(SearchRequest(words: ""), .missingField(type: "SearchRequest", field: "words"))
        XCTAssertEqual(try SearchRequest(serializedBytes: SearchRequest(words: "x").serializedBytes()).chatID, 0, "0 searches every chat")
        var badMessage = Fixtures.chatMessages[0]
        badMessage.chatSequence = 0
        assertRejects(
            HistoryResponse(messages: [Fixtures.chatMessages[0], badMessage], more: true),
            .missingField(type: "HistoryResponse", field: "messages[1].chat_sequence")
        )
        assertRejects(
            SearchResponse(hits: [SearchHit(message: badMessage, chatName: "c", senderName: "s", snippet: "")]),
            .missingField(type: "SearchResponse", field: "hits[0].message.chat_sequence")
        )
        // A hit with no message at all: field 2 (chat_name) only.
        XCTAssertThrowsError(try SearchHit(serializedBytes: [0x12, 0x01, 0x63])) { error in
            XCTAssertEqual(error as? WireDecodingError, .missingField(type: "SearchHit", field: "message"))
        }
    }

    func testDescriptionsReadWellInAnErrorPayload() {
        XCTAssertEqual(
            WireDecodingError.missingField(type: "SendMessage", field: "chat_id").description,
            "missing required field SendMessage.chat_id"
        )
        XCTAssertEqual(
            WireDecodingError.invalidField(
                type: "SendMessage",
                field: "client_message_id",
                reason: "longer than 128 bytes"
            ).description,
            "invalid field SendMessage.client_message_id: longer than 128 bytes"
        )
        XCTAssertEqual(
            WireDecodingError.malformed(type: "ClientFrame", reason: "the data is not valid Protobuf").description,
            "malformed ClientFrame: the data is not valid Protobuf"
        )
        XCTAssertEqual(WireDecodingError.missingField(type: "Push", field: "kind").type, "Push")
    }

    private func assertRejects<T: WireMessage>(
        _ value: T,
        _ expected: WireDecodingError,
        file: StaticString = #filePath,
        line: UInt = #line
    ) {
        XCTAssertThrowsError(try T(serializedBytes: value.serializedBytes()), file: file, line: line) { error in
            XCTAssertEqual(error as? WireDecodingError, expected, file: file, line: line)
        }
    }
}
