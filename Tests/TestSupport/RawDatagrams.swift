import CoAP
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A plain UDP socket for crafted datagrams: it sends bytes exactly as given (no CoAP layer to
/// tidy them up) and keeps whatever comes back, so a test can see the server's raw answer,
/// its size, or its silence.
public final class RawUDPSocket: Sendable {
    private let channel: any Channel
    private let inbox: NIOLockedValueBox<[[UInt8]]>

    /// The local address, e.g. to tell two sockets apart.
    public var localAddress: SocketAddress? { channel.localAddress }

    private init(channel: any Channel, inbox: NIOLockedValueBox<[[UInt8]]>) {
        self.channel = channel
        self.inbox = inbox
    }

    /// Binds an ephemeral port on `host` (any 127.x.y.z works on Linux loopback).
    public static func bind(host: String = "127.0.0.1") async throws -> RawUDPSocket {
        let inbox = NIOLockedValueBox<[[UInt8]]>([])
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            // Big enough for any UDP datagram, so an answer's size is measured whole.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(inbox: inbox)) }
            }
            .bind(host: host, port: 0).get()
        return RawUDPSocket(channel: channel, inbox: inbox)
    }

    public func send(_ datagram: [UInt8], to peer: SocketAddress) async throws {
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: peer, data: ByteBuffer(bytes: datagram))).get()
    }

    /// Sends `datagram` and returns the replies that come within `timeout` (returning as soon as
    /// `expecting` have come); earlier replies are discarded first.
    public func exchange(_ datagram: [UInt8], with peer: SocketAddress, expecting: Int = 1, timeout: Duration = .seconds(2)) async throws -> [[UInt8]] {
        inbox.withLockedValue { $0 = [] }
        try await send(datagram, to: peer)
        return try await collect(expecting: expecting, timeout: timeout)
    }

    /// Waits until `expecting` replies are in, or `timeout`; returns what is in and clears it.
    public func collect(expecting: Int, timeout: Duration) async throws -> [[UInt8]] {
        let deadline = ContinuousClock.now + timeout
        while inbox.withLockedValue({ $0.count }) < expecting && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        return inbox.withLockedValue { replies in
            defer { replies = [] }
            return replies
        }
    }

    /// Replies received so far, without clearing them.
    public var received: Int { inbox.withLockedValue { $0.count } }

    public func close() async {
        try? await channel.close()
    }

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let inbox: NIOLockedValueBox<[[UInt8]]>
        init(inbox: NIOLockedValueBox<[[UInt8]]>) { self.inbox = inbox }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data).data
            let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
            inbox.withLockedValue { $0.append(bytes) }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // ICMP port unreachable and the like: not the server's answer, and not fatal here.
        }
    }
}

/// Runs `body` with a raw socket on `host`; closed however `body` ends.
public func withRawSocket<T>(host: String = "127.0.0.1", _ body: (RawUDPSocket) async throws -> T) async throws -> T {
    let socket = try await RawUDPSocket.bind(host: host)
    do {
        let result = try await body(socket)
        await socket.close()
        return result
    } catch {
        await socket.close()
        throw error
    }
}

/// What a crafted datagram should draw from the server.
public enum RawOutcome: Equatable, CustomStringConvertible {
    /// No answer at all (RFC 7252: silently ignore).
    case silence
    /// A Reset with the request's Message ID.
    case reset
    /// A response with this code, echoing the Message ID and token.
    case code(CoAPCode)

    public var description: String {
        switch self {
        case .silence: "silence"
        case .reset: "RST"
        case .code(let code): "\(code)"
        }
    }

    /// What `replies` amount to, for a request with `messageID`.
    public static func of(_ replies: [[UInt8]]) -> RawOutcome? {
        guard let first = replies.first else { return .silence }
        guard let message = try? CoAPMessage.decode(first) else { return nil }
        return message.type == .reset ? .reset : .code(message.code)
    }
}

extension CoAPMessage {
    /// A request with explicit type, Message ID and token, for raw sending.
    public static func raw(_ method: CoAPCode, path: String, query: [String] = [], payload: [UInt8] = [], type: MessageType = .confirmable, messageID: UInt16, token: [UInt8] = [0xC0, 0x01]) -> CoAPMessage {
        var message = CoAPMessage.request(method, path: path, query: query, payload: payload)
        message.type = type
        message.messageID = messageID
        message.token = token
        return message
    }
}
