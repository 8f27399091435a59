@testable import CourierDevice
import CourierProtocol
import NIOCore
import NIOWebSocket
import XCTest

/// What a device does with each frame of its push session: each chat kept consecutive, every
/// push but the device's own acknowledged (duplicates too), a gap filled by one sync, never skipped.
final class PushReceptionTests: XCTestCase {
    private func message(chat: UInt64, sequence: UInt64, senderDevice: UInt64 = 1) -> ChatMessage {
        ChatMessage(
            serverMessageID: chat * 1_000 + sequence, chatID: chat, chatSequence: sequence, senderUserID: 1, senderDeviceID: senderDevice,
            clientMessageID: "m\(chat)-\(sequence)", text: "hi", clientSentAtMs: 0, acceptedAtMs: 0
        )
    }

    private func push(chat: UInt64, sequence: UInt64, senderDevice: UInt64 = 1) -> ServerFrame {
        .push(.message(message(chat: chat, sequence: sequence, senderDevice: senderDevice)))
    }

    private func ack(_ cursors: (UInt64, UInt64)...) -> ClientFrame {
        .ack(PushAck(cursors: cursors.map { ChatCursor(chatID: $0.0, sequence: $0.1) }))
    }

    func testTheNextOfAChatIsStoredAndAcknowledgedAndADuplicateIsOnlyAcknowledgedAgain() {
        var reception = PushReception(cursors: [ChatCursor(chatID: 7, sequence: 3)])
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 4)), .store([message(chat: 7, sequence: 4)], replies: [ack((7, 4))]))
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 4)), .store([], replies: [ack((7, 4))]))
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 2)), .store([], replies: [ack((7, 4))]))
        // A chat the device holds nothing of starts where the server starts it.
        XCTAssertEqual(reception.react(to: push(chat: 9, sequence: 12)), .store([message(chat: 9, sequence: 12)], replies: [ack((9, 12))]))
    }

    func testAGapIsNeverSkippedAndOneSyncFillsIt() {
        var reception = PushReception(cursors: [ChatCursor(chatID: 7, sequence: 3)])
        let sync = ClientFrame.sync(SyncRequest(have: [ChatCursor(chatID: 7, sequence: 3)]))
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 5)), .store([], replies: [ack((7, 3)), sync]))
        // While the sync is out, a later push asks for nothing more.
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 6)), .store([], replies: [ack((7, 3))]))
        let answer = ServerFrame.sync(SyncResponse(messages: [4, 5, 6].map { message(chat: 7, sequence: $0) }, more: false))
        XCTAssertEqual(reception.react(to: answer), .store([4, 5, 6].map { message(chat: 7, sequence: $0) }, replies: [ack((7, 6))]))
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 7)), .store([message(chat: 7, sequence: 7)], replies: [ack((7, 7))]))
    }

    func testTheDevicesOwnMessagesAreHeldAndTheirCursorsGoWithTheNextAcknowledgement() {
        var reception = PushReception(cursors: [ChatCursor(chatID: 7, sequence: 3), ChatCursor(chatID: 9, sequence: 0)])
        // Before the Welcome the device does not know itself: everything is acknowledged.
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 4, senderDevice: 5)), .store([message(chat: 7, sequence: 4, senderDevice: 5)], replies: [ack((7, 4))]))
        _ = reception.react(to: .welcome(Welcome(userID: 1, deviceID: 5, heartbeatIntervalMs: 30_000, serverTimeMs: 0, maxFrameBytes: 65_536)))
        XCTAssertEqual(
            reception.react(to: push(chat: 7, sequence: 5, senderDevice: 5)), .store([message(chat: 7, sequence: 5, senderDevice: 5)], replies: []),
            "its own message is held, not acknowledged alone"
        )
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 5, senderDevice: 5)), .store([], replies: [ack((7, 5))]), "a duplicate of it is (a resend stops)")
        XCTAssertEqual(reception.react(to: push(chat: 7, sequence: 6, senderDevice: 5)), .store([message(chat: 7, sequence: 6, senderDevice: 5)], replies: []))
        XCTAssertEqual(
            reception.react(to: push(chat: 9, sequence: 1, senderDevice: 2)), .store([message(chat: 9, sequence: 1, senderDevice: 2)], replies: [ack((7, 6), (9, 1))]),
            "the next acknowledgement carries the held cursor along"
        )
        XCTAssertEqual(reception.react(to: push(chat: 9, sequence: 2, senderDevice: 2)), .store([message(chat: 9, sequence: 2, senderDevice: 2)], replies: [ack((9, 2))]), "once")
        // A sync's answer follows the same rule.
        let answer = ServerFrame.sync(SyncResponse(messages: [message(chat: 9, sequence: 3, senderDevice: 5)], more: false))
        XCTAssertEqual(reception.react(to: answer), .store([message(chat: 9, sequence: 3, senderDevice: 5)], replies: []))
    }

    func testAnAnswerWithMoreAsksAgainFromTheNewCursors() {
        var reception = PushReception(cursors: [ChatCursor(chatID: 7, sequence: 0)])
        let answer = ServerFrame.sync(SyncResponse(messages: [message(chat: 7, sequence: 1)], more: true))
        XCTAssertEqual(
            reception.react(to: answer),
            .store([message(chat: 7, sequence: 1)], replies: [ack((7, 1)), .sync(SyncRequest(have: [ChatCursor(chatID: 7, sequence: 1)]))])
        )
        XCTAssertEqual(reception.react(to: .sync(SyncResponse(messages: [], more: false))), .nothing)
    }

    func testAPingIsAnsweredACloseSaysItsCodeAndReasonAndAnUnreadableFrameIsSkipped() {
        var reception = PushReception(cursors: [])
        guard case .pong(let pong) = reception.react(to: WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer(bytes: [1, 2, 3]))) else {
            return XCTFail("a ping is answered")
        }
        XCTAssertEqual(pong.opcode, .pong)
        XCTAssertNotNil(pong.maskKey, "a client masks every frame")
        XCTAssertEqual(Array(buffer: pong.data), [1, 2, 3], "with the ping's data (the encoder masks it)")

        var close = ByteBuffer()
        close.writeInteger(UInt16(1008))
        close.writeString("bad token")
        XCTAssertEqual(reception.react(to: WebSocketFrame(fin: true, opcode: .connectionClose, data: close)), .closed(code: 1008, reason: "bad token"))
        XCTAssertEqual(reception.react(to: WebSocketFrame(fin: true, opcode: .connectionClose, data: ByteBuffer())), .closed(code: 1005, reason: ""))

        XCTAssertEqual(reception.react(to: WebSocketFrame(fin: true, opcode: .binary, data: ByteBuffer(bytes: [0xFF, 0xFF]))), .nothing)
        let pushed = ByteBuffer(bytes: ServerFrame.push(.message(message(chat: 4, sequence: 1))).serializedBytes())
        XCTAssertEqual(
            reception.react(to: WebSocketFrame(fin: true, opcode: .binary, data: pushed)),
            .store([message(chat: 4, sequence: 1)], replies: [ack((4, 1))]),
            "a binary frame is a ServerFrame"
        )
    }

    func testOnlyAnUnauthorizedErrorRefusesTheDevice() {
        var reception = PushReception(cursors: [])
        XCTAssertEqual(reception.react(to: .error(WireError(code: .unauthorized, message: "bad token"))), .refused("bad token"))
        XCTAssertEqual(reception.react(to: .error(WireError(code: .overloaded, message: "busy"))), .nothing)
    }
}
