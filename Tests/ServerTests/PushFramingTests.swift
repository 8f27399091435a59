@testable import CourierPush
import NIOCore
import NIOEmbedded
import NIOWebSocket
import XCTest

/// A push batch's frames are encoded by the session itself, past NIO's encoder: NIO's decoder
/// reads them back whole, at every length form (7, 16 and 64 bits), and a close frame keeps
/// its code and reason.
final class PushFramingTests: XCTestCase {
    func testEveryLengthFormAndACloseFrameDecodeWithNIOsDecoder() throws {
        let sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 70_001]
        var buffer = ByteBuffer()
        for (index, size) in sizes.enumerated() {
            PushSession.writeFrame(opcode: PushSession.binaryOpcode, payload: Array(repeating: UInt8(index), count: size), to: &buffer)
        }
        PushSession.writeFrame(opcode: PushSession.closeOpcode, payload: [0x03, 0xF0] + Array("going away".utf8), to: &buffer)

        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
        try channel.writeInbound(buffer)
        for (index, size) in sizes.enumerated() {
            let frame = try XCTUnwrap(try channel.readInbound(as: WebSocketFrame.self), "frame \(index)")
            XCTAssertTrue(frame.fin)
            XCTAssertEqual(frame.opcode, .binary)
            XCTAssertNil(frame.maskKey, "a server's frames are not masked")
            XCTAssertEqual(Array(buffer: frame.unmaskedData), Array(repeating: UInt8(index), count: size), "frame \(index) of \(size) bytes")
        }
        var close = try XCTUnwrap(try channel.readInbound(as: WebSocketFrame.self))
        XCTAssertEqual(close.opcode, .connectionClose)
        XCTAssertEqual(close.data.readWebSocketErrorCode(), .policyViolation)
        XCTAssertEqual(close.data.readString(length: close.data.readableBytes), "going away")
        XCTAssertNil(try channel.readInbound(as: WebSocketFrame.self), "nothing more")
        _ = try channel.finish()
    }

    func testACloseReasonIsCutToWholeCharactersWithinTheControlFrameLimit() {
        XCTAssertEqual(PushSession.closeReason("bad token"), "bad token")
        let long = String(repeating: "é", count: 100)  // 200 bytes, 2 each
        XCTAssertEqual(PushSession.closeReason(long), Substring(String(repeating: "é", count: 60)))
        let odd = "a" + long  // 121 bytes at the 61st character: the cut falls inside one
        XCTAssertEqual(PushSession.closeReason(odd).utf8.count, 119)
        XCTAssertTrue(PushSession.closeReason(odd).hasPrefix("aé"))
    }
}
