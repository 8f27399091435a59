import CourierProtocol
import XCTest

/// Pins field numbers and wire types with hand-encoded bytes: the schema is never renumbered.
final class WireFormatTests: XCTestCase {
    func testSendMessageBytes() {
        let message = SendMessage(clientMessageID: "a", chatID: 2, text: "hi", clientSentAtMs: 3)
        XCTAssertEqual(
            message.serializedBytes(),
            [0x0A, 0x01, 0x61, 0x10, 0x02, 0x1A, 0x02, 0x68, 0x69, 0x20, 0x03]
        )
    }

    func testSendResultBytes() {
        let result = SendResult(clientMessageID: "a", serverMessageID: 9, chatID: 2, chatSequence: 4, acceptedAtMs: 5)
        XCTAssertEqual(
            result.serializedBytes(),
            [0x0A, 0x01, 0x61, 0x10, 0x09, 0x18, 0x02, 0x20, 0x04, 0x28, 0x05]
        )
    }

    func testChatMessageBytes() {
        let message = ChatMessage(
            serverMessageID: 1,
            chatID: 2,
            chatSequence: 3,
            senderUserID: 4,
            senderDeviceID: 5,
            clientMessageID: "a",
            text: "b",
            clientSentAtMs: 8,
            acceptedAtMs: 9
        )
        XCTAssertEqual(
            message.serializedBytes(),
            [
                0x08, 0x01, 0x10, 0x02, 0x18, 0x03, 0x20, 0x04, 0x28, 0x05,
                0x32, 0x01, 0x61, 0x3A, 0x01, 0x62, 0x40, 0x08, 0x48, 0x09,
            ]
        )
    }

    func testChatAPIBytes() {
        XCTAssertEqual(
            ChatInfo(chatID: 1, name: "g", lastSequence: 2, memberNames: ["a", "b"], memberCount: 3).serializedBytes(),
            [0x08, 0x01, 0x12, 0x01, 0x67, 0x18, 0x02, 0x22, 0x01, 0x61, 0x22, 0x01, 0x62, 0x28, 0x03]
        )
        XCTAssertEqual(CreateChat(name: "g", memberNames: ["a"]).serializedBytes(), [0x0A, 0x01, 0x67, 0x12, 0x01, 0x61])
        XCTAssertEqual(JoinChat(name: "g").serializedBytes(), [0x0A, 0x01, 0x67])
        XCTAssertEqual(InviteToChat(chatID: 1, userName: "a").serializedBytes(), [0x08, 0x01, 0x12, 0x01, 0x61])
        XCTAssertEqual(HistoryRequest(chatID: 1, beforeSequence: 2, limit: 3).serializedBytes(), [0x08, 0x01, 0x10, 0x02, 0x18, 0x03])
        XCTAssertEqual(SearchRequest(words: "w", chatID: 1, limit: 3).serializedBytes(), [0x0A, 0x01, 0x77, 0x10, 0x01, 0x18, 0x03])
        XCTAssertEqual(ChatList(chats: [], more: true).serializedBytes(), [0x10, 0x01])
        XCTAssertEqual(HistoryResponse(messages: [], more: true).serializedBytes(), [0x10, 0x01])
    }

    func testNegativeTimesAreTenByteVarints() {
        // int64, not sint64: -1 is ten bytes. Pinned because changing the type would break old peers.
        XCTAssertEqual(
            Heartbeat(sentAtMs: -1).serializedBytes(),
            [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        )
    }

    func testClientFrameBytes() {
        XCTAssertEqual(
            ClientFrame.hello(Hello(token: "t", have: [], clientName: "")).serializedBytes(),
            [0x0A, 0x03, 0x0A, 0x01, 0x74]
        )
        XCTAssertEqual(
            ClientFrame.ack(PushAck(cursors: [ChatCursor(chatID: 2, sequence: 3)])).serializedBytes(),
            [0x12, 0x06, 0x0A, 0x04, 0x08, 0x02, 0x10, 0x03]
        )
        XCTAssertEqual(ClientFrame.heartbeat(Heartbeat(sentAtMs: 1)).serializedBytes(), [0x1A, 0x02, 0x08, 0x01])
        XCTAssertEqual(
            ClientFrame.sync(SyncRequest(have: [ChatCursor(chatID: 2, sequence: 0)], limit: 5)).serializedBytes(),
            [0x22, 0x06, 0x0A, 0x02, 0x08, 0x02, 0x10, 0x05]
        )
    }

    func testServerFrameBytes() {
        let welcome = Welcome(userID: 1, deviceID: 2, heartbeatIntervalMs: 3, serverTimeMs: 4, maxFrameBytes: 5)
        XCTAssertEqual(
            ServerFrame.welcome(welcome).serializedBytes(),
            [0x0A, 0x0A, 0x08, 0x01, 0x10, 0x02, 0x18, 0x03, 0x20, 0x04, 0x28, 0x05]
        )
        let receipt = DeliveryReceipt(chatID: 1, chatSequence: 2, serverMessageID: 3, clientMessageID: "a")
        XCTAssertEqual(
            ServerFrame.push(.delivered(receipt)).serializedBytes(),
            [0x12, 0x0B, 0x12, 0x09, 0x08, 0x01, 0x10, 0x02, 0x18, 0x03, 0x22, 0x01, 0x61]
        )
        XCTAssertEqual(ServerFrame.heartbeat(Heartbeat(sentAtMs: 1)).serializedBytes(), [0x1A, 0x02, 0x08, 0x01])
        XCTAssertEqual(
            ServerFrame.sync(SyncResponse(messages: [], more: true)).serializedBytes(),
            [0x22, 0x02, 0x10, 0x01]
        )
        XCTAssertEqual(
            ServerFrame.error(WireError(code: .overloaded, message: "x", retryAfterSeconds: 2)).serializedBytes(),
            [0x2A, 0x07, 0x08, 0x06, 0x12, 0x01, 0x78, 0x18, 0x02]
        )
    }

    func testErrorCodeNumbers() {
        let expected: [(WireErrorCode, UInt8)] = [
            (.badRequest, 1), (.unauthorized, 2), (.forbidden, 3), (.notFound, 4), (.tooLarge, 5),
            (.overloaded, 6), (.rateLimited, 7), (.internalError, 8), (.storageFull, 9), (.conflict, 10),
            (.sessionReplaced, 11),
        ]
        for (code, number) in expected {
            XCTAssertEqual(WireError(code: code, message: "").serializedBytes(), [0x08, number], "\(code)")
        }
        XCTAssertEqual(WireError(code: .unspecified, message: "").serializedBytes(), [])
    }
}
