@testable import CourierPush
import NIOCore
import NIOEmbedded
import NIOWebSocket
import WebSocketFraming
import XCTest

/// A push batch's frames (and a device's acknowledgements) are encoded by the writer itself,
/// past NIO's encoder: NIO's decoder reads them back whole, at every length form (7, 16 and 64
/// bits), unmasked (a server's) and masked (a client's), and a close frame keeps its code and
/// reason.
final class PushFramingTests: XCTestCase {
    func testEveryLengthFormAndACloseFrameDecodeWithNIOsDecoder() throws {
        let sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 70_001]
        var buffer = ByteBuffer()
        for (index, size) in sizes.enumerated() {
            let payload = Array(repeating: UInt8(index), count: size)
            if index % 2 == 0 {
                buffer.writeWholeWebSocketFrameHeader(opcode: .binary, length: size)
                buffer.writeBytes(payload)
            } else {
                buffer.writeWholeMaskedWebSocketFrame(opcode: .binary, payload: payload)
            }
        }
        let close: [UInt8] = [0x03, 0xF0] + Array("going away".utf8)
        buffer.writeWholeWebSocketFrameHeader(opcode: .connectionClose, length: close.count)
        buffer.writeBytes(close)

        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
        try channel.writeInbound(buffer)
        for (index, size) in sizes.enumerated() {
            let frame = try XCTUnwrap(try channel.readInbound(as: WebSocketFrame.self), "frame \(index)")
            XCTAssertTrue(frame.fin)
            XCTAssertEqual(frame.opcode, .binary)
            XCTAssertEqual(frame.maskKey == nil, index % 2 == 0, "a server's frames are not masked, a client's are")
            XCTAssertEqual(Array(buffer: frame.unmaskedData), Array(repeating: UInt8(index), count: size), "frame \(index) of \(size) bytes")
        }
        var closing = try XCTUnwrap(try channel.readInbound(as: WebSocketFrame.self))
        XCTAssertEqual(closing.opcode, .connectionClose)
        XCTAssertEqual(closing.data.readWebSocketErrorCode(), .policyViolation)
        XCTAssertEqual(closing.data.readString(length: closing.data.readableBytes), "going away")
        XCTAssertNil(try channel.readInbound(as: WebSocketFrame.self), "nothing more")
        _ = try channel.finish()
    }

    /// RFC 6455 §5.7's own examples.
    func testTheRFCsExampleFramesComeOutByteForByte() {
        var unmasked = ByteBuffer()
        unmasked.writeWholeWebSocketFrameHeader(opcode: .text, length: 5)
        unmasked.writeString("Hello")
        XCTAssertEqual(Array(buffer: unmasked), [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        var masked = ByteBuffer()
        masked.writeString("already in the buffer ")
        masked.moveReaderIndex(forwardBy: masked.readableBytes)
        masked.writeWholeMaskedWebSocketFrame(opcode: .text, payload: Array("Hello".utf8), maskingKey: [0x37, 0xFA, 0x21, 0x3D])
        XCTAssertEqual(Array(buffer: masked), [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
        var sixteen = ByteBuffer()
        sixteen.writeWholeWebSocketFrameHeader(opcode: .binary, length: 256)
        XCTAssertEqual(Array(buffer: sixteen), [0x82, 0x7E, 0x01, 0x00])
        var sixtyFour = ByteBuffer()
        sixtyFour.writeWholeWebSocketFrameHeader(opcode: .binary, length: 65_536)
        XCTAssertEqual(Array(buffer: sixtyFour), [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00])
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
