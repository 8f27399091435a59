// libFuzzer target: bytes arriving on the push port after the WebSocket upgrade.
//
// The bytes go through the handlers NIOTypedWebSocketServerUpgrader puts on the server's channel
// (WebSocketFrameEncoder, WebSocketFrameDecoder, WebSocketProtocolErrorHandler), in an
// EmbeddedChannel; each frame is then handled the way PushSession handles it: pings answered,
// fragments reassembled up to the frame limit, whole binary messages decoded as ClientFrame, the
// first of them required to be a Hello. PushSession itself needs the whole server (storage,
// actors, a live channel), so its frame loop is mirrored here, not called.
//
// Input: the first byte is the size of the chunks the rest arrives in (0: all at once), so
// frames split across reads are exercised too.
import CourierProtocol
import FuzzerDriver
import NIOCore
import NIOEmbedded
import NIOWebSocket

/// The frame and message limit. The server's default is 64 KiB; the logic is the same for any
/// bound, and a small one is reachable within libFuzzer's input length.
let maxFrameBytes = 1024

/// PushSession's frame loop, without the server behind it.
struct SessionMirror {
    private var reassembly: ByteBuffer?
    private var helloSeen = false

    /// Handles one frame; false once the session would end.
    mutating func received(_ frame: WebSocketFrame, on channel: EmbeddedChannel) -> Bool {
        switch frame.opcode {
        case .ping:
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData), promise: nil)
            return true
        case .pong:
            return true
        case .connectionClose, .text:
            return false
        case .binary, .continuation:
            var data = frame.unmaskedData
            if frame.opcode == .binary { reassembly = ByteBuffer() }
            guard reassembly != nil else { return false }
            guard reassembly!.readableBytes + data.readableBytes <= maxFrameBytes else { return false }
            reassembly!.writeBuffer(&data)
            if frame.fin, let whole = reassembly {
                reassembly = nil
                return message(Array(buffer: whole))
            }
            return true
        default:
            return false
        }
    }

    /// A whole message: the first must be a Hello; later ones that do not decode are answered
    /// with an error and the session goes on.
    private mutating func message(_ bytes: [UInt8]) -> Bool {
        let frame: ClientFrame
        do throws(WireDecodingError) {
            frame = try ClientFrame(serializedBytes: bytes)
        } catch {
            precondition(!error.description.isEmpty, "a WireDecodingError with no description")
            return helloSeen
        }
        let again = try? ClientFrame(serializedBytes: frame.serializedBytes())
        precondition(again == frame, "ClientFrame round trip: \(frame) decodes back as \(String(describing: again))")
        if !helloSeen {
            guard case .hello = frame else { return false }
            helloSeen = true
        }
        return true
    }
}

/// Checks that a decoded frame, encoded again by NIO's encoder, decodes to the same frame.
struct RoundTrip {
    private let encoder = EmbeddedChannel(handler: WebSocketFrameEncoder())
    private let decoder = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameBytes)))

    func check(_ frame: WebSocketFrame) {
        // The decoder keeps a frame's data as it came (masked); the encoder masks what it is given.
        let plain = WebSocketFrame(
            fin: frame.fin, rsv1: frame.rsv1, rsv2: frame.rsv2, rsv3: frame.rsv3,
            opcode: frame.opcode, maskKey: frame.maskKey, data: frame.unmaskedData
        )
        do {
            try encoder.writeOutbound(plain)
            var wire = ByteBuffer()
            while var part = try encoder.readOutbound(as: ByteBuffer.self) { wire.writeBuffer(&part) }
            try decoder.writeInbound(wire)
            let again = try decoder.readInbound(as: WebSocketFrame.self)
            precondition(again == frame, "WebSocket round trip: \(frame) decodes back as \(String(describing: again))")
            let extra = try decoder.readInbound(as: WebSocketFrame.self)
            precondition(extra == nil, "WebSocket round trip: \(frame) decodes as two frames")
        } catch {
            preconditionFailure("WebSocket round trip: \(frame) fails: \(error)")
        }
    }

    func finish() {
        do {
            _ = try encoder.finish()
            _ = try decoder.finish()
        } catch {
            preconditionFailure("WebSocket round trip: a channel does not finish cleanly: \(error)")
        }
    }
}

runFuzzer { input in
    guard let chunkByte = input.first else { return }
    let stream = input.dropFirst()
    let chunkSize = chunkByte == 0 ? max(stream.count, 1) : Int(chunkByte)
    let channel = EmbeddedChannel(handlers: [
        WebSocketFrameEncoder(),
        ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameBytes)),
        WebSocketProtocolErrorHandler(),
    ])
    var session = SessionMirror()
    let roundTrip = RoundTrip()
    var start = stream.startIndex
    reading: while start < stream.endIndex {
        let end = min(start + chunkSize, stream.endIndex)
        // A protocol error is thrown here after the error handler has sent a close frame.
        let failed = (try? channel.writeInbound(ByteBuffer(bytes: stream[start..<end]))) == nil
        start = end
        while let frame = try? channel.readInbound(as: WebSocketFrame.self) {
            precondition(frame.length <= maxFrameBytes, "a \(frame.length)-byte frame passed the \(maxFrameBytes)-byte limit")
            roundTrip.check(frame)
            guard session.received(frame, on: channel) else { break reading }
        }
        if failed { break }
    }
    roundTrip.finish()
    _ = try? channel.finish(acceptAlreadyClosed: true)
}
