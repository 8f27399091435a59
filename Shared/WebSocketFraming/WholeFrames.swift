import NIOCore
import NIOWebSocket

/// WebSocket frames written straight into one buffer (RFC 6455 §5.2), for a writer that sends
/// many small frames at once and writes the buffer past NIO's `WebSocketFrameEncoder` (from
/// the encoder's context). Through the encoder each frame was a `WebSocketFrame`, a pipeline
/// pass, a header buffer of its own and an entry in the channel's pending writes.
extension ByteBuffer {
    /// The longest header: 2 bytes, 8 more for a 64-bit length, 4 more for a mask.
    public static let maxWebSocketFrameHeaderBytes = 14

    /// Appends a whole (FIN) frame's header for `length` bytes of payload: a server's frame
    /// unmasked (`maskingKey` nil, RFC 6455 §5.1), a client's with its mask. The payload goes
    /// next, masked by the caller when there is a mask (`writeMaskedPayload`).
    public mutating func writeWholeWebSocketFrameHeader(opcode: WebSocketOpcode, length: Int, maskingKey: WebSocketMaskingKey? = nil) {
        writeInteger(0x80 | UInt8(webSocketOpcode: opcode))
        let maskBit: UInt8 = maskingKey == nil ? 0 : 0x80
        switch length {
        case ..<126:
            writeInteger(maskBit | UInt8(length))
        case ...Int(UInt16.max):
            writeInteger(maskBit | 126)
            writeInteger(UInt16(length))
        default:
            writeInteger(maskBit | 127)
            writeInteger(UInt64(length))
        }
        if let maskingKey { writeBytes(maskingKey) }
    }

    /// Appends a client's whole frame: its header with a new random mask, then the payload
    /// masked with it.
    public mutating func writeWholeMaskedWebSocketFrame(opcode: WebSocketOpcode, payload: ByteBuffer) {
        let maskingKey = WebSocketMaskingKey.random()
        writeWholeWebSocketFrameHeader(opcode: opcode, length: payload.readableBytes, maskingKey: maskingKey)
        var masked = payload
        masked.webSocketMask(maskingKey)
        writeBuffer(&masked)
    }
}
