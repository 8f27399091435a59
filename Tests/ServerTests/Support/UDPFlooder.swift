import CoAP
import CourierProtocol
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One device that floods: non-confirmable `POST /v1/msg` requests with its token, as fast as
/// asked, from one socket, never waiting for an answer; it counts the answers by code.
final class UDPFlooder: Sendable {
    private let channel: any Channel
    private let answers: NIOLockedValueBox<[String: Int]>

    static func start() async throws -> UDPFlooder {
        let answers = NIOLockedValueBox<[String: Int]>([:])
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { $0.pipeline.addHandler(Counter(answers: answers)) }
            .bind(host: "127.0.0.1", port: 0).get()
        return UDPFlooder(channel: channel, answers: answers)
    }

    private init(channel: any Channel, answers: NIOLockedValueBox<[String: Int]>) {
        self.channel = channel
        self.answers = answers
    }

    /// Answers so far, by CoAP code ("2.01", "4.29", ...), and "5.03+max-age" for those with Max-Age.
    var answersByCode: [String: Int] { answers.withLockedValue { $0 } }

    /// Sends `ratePerSecond` messages into `chatID` for `duration`; returns how many it sent.
    func flood(to server: SocketAddress, token: String, chatID: UInt64, ratePerSecond: Int, for duration: Duration) async throws -> Int {
        let start = ContinuousClock.now
        var sent = 0
        let batch = max(1, ratePerSecond / 100)
        while ContinuousClock.now - start < duration {
            for _ in 0..<batch {
                let message = SendMessage(clientMessageID: "flood-\(sent)", chatID: chatID, text: "flood \(sent)", clientSentAtMs: Int64(Date().timeIntervalSince1970 * 1000))
                var request = CoAPMessage.request(.post, path: "/v1/msg", query: ["t=\(token)"], payload: message.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
                request.type = .nonConfirmable
                request.messageID = UInt16(truncatingIfNeeded: sent)
                request.token = withUnsafeBytes(of: UInt32(sent).bigEndian, Array.init)
                channel.write(AddressedEnvelope(remoteAddress: server, data: ByteBuffer(bytes: request.encode())), promise: nil)
                sent += 1
            }
            channel.flush()
            let due = start + .seconds(Double(sent) / Double(ratePerSecond))
            if due > .now { try await Task.sleep(until: due) }
        }
        return sent
    }

    func close() async {
        try? await channel.close()
    }

    private final class Counter: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let answers: NIOLockedValueBox<[String: Int]>
        init(answers: NIOLockedValueBox<[String: Int]>) { self.answers = answers }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard let message = try? CoAPMessage.decode(Array(buffer: envelope.data)), message.code != .empty else { return }
            let withMaxAge = message.uintOption(.maxAge) != nil
            answers.withLockedValue { answers in
                answers[message.code.description, default: 0] += 1
                if withMaxAge { answers["\(message.code)+max-age", default: 0] += 1 }
            }
        }
    }
}
