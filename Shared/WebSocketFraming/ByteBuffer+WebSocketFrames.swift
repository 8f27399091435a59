import NIOCore
import NIOWebSocket

/// WebSocket frames written straight into one buffer, for a writer that sends many small
/// frames at once and writes the buffer past NIO's `WebSocketFrameEncoder` (from the encoder's
/// context). Through the encoder each frame was a `WebSocketFrame`, a pipeline pass, a header
/// buffer of its own and an entry in the channel's pending writes.
///
/// RFC 6455 §5.2:
///
///      0                   1                   2                   3
///      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///     +-+-+-+-+-------+-+-------------+-------------------------------+
///     |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
///     |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
///     |N|V|V|V|       |S|             |   (if payload len==126/127)   |
///     | |1|2|3|       |K|             |                               |
///     +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
///     |     Extended payload length continued, if payload len == 127  |
///     + - - - - - - - - - - - - - - - +-------------------------------+
///     |                               |Masking-key, if MASK set to 1  |
///     +-------------------------------+-------------------------------+
///     | Masking-key (continued)       |          Payload Data         |
///     +-------------------------------- - - - - - - - - - - - - - - - +
extension ByteBuffer {
    /// The longest header: 2 bytes, 8 more for a 64-bit length, 4 more for a mask.
    public static let maxWebSocketFrameHeaderBytes = 14

    /// Appends a whole (FIN) frame's header for `length` bytes of payload: a server's frame
    /// unmasked (`maskingKey` nil, §5.1), a client's with its mask. The payload goes next,
    /// masked when there is a mask (as `writeWholeMaskedWebSocketFrame` does).
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

    /// Appends a client's whole frame: its header with the mask (a new random one unless
    /// given), then the payload masked with it.
    public mutating func writeWholeMaskedWebSocketFrame(opcode: WebSocketOpcode, payload: some Collection<UInt8>, maskingKey: WebSocketMaskingKey = .random()) {
        writeWholeWebSocketFrameHeader(opcode: opcode, length: payload.count, maskingKey: maskingKey)
        // Masked in place where it was written, by NIO's `webSocketMask` over just the payload
        // (the readable bytes for a moment): a copy masked on its own would be one more
        // allocation per frame.
        let readerIndex = self.readerIndex
        let payloadStart = writerIndex
        writeBytes(payload)
        moveReaderIndex(to: payloadStart)
        webSocketMask(maskingKey)
        moveReaderIndex(to: readerIndex)
    }
}
