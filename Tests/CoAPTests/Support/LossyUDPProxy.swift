import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TestSupport

/// A UDP relay for one client that drops and duplicates datagrams in both directions with a
/// seeded generator, so the message layer can be tested against loss and duplication.
final class LossyUDPProxy: Sendable {
    struct Counters: Sendable {
        var forwarded = 0
        var dropped = 0
        var duplicated = 0
    }

    private struct State {
        var generator: SplitMix64
        var counters = Counters()
        var client: SocketAddress?
    }

    let address: SocketAddress
    private let front: any Channel
    private let back: any Channel
    private let state: NIOLockedValueBox<State>

    var counters: Counters { state.withLockedValue { $0.counters } }

    static func start(to server: SocketAddress, dropRate: Double, duplicateRate: Double, seed: UInt64) async throws -> LossyUDPProxy {
        let state = NIOLockedValueBox(State(generator: SplitMix64(seed: seed)))
        let frontPromise = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: (any Channel).self)
        // Server -> client: replies arrive on the back socket and leave through the front one.
        let back = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.pipeline.addHandler(Relay(state: state, dropRate: dropRate, duplicateRate: duplicateRate) { envelope, state in
                    guard let client = state.client else { return nil }
                    return (frontPromise.futureResult, AddressedEnvelope(remoteAddress: client, data: envelope.data))
                })
            }
            .bind(host: "127.0.0.1", port: 0).get()
        // Client -> server.
        let front = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.pipeline.addHandler(Relay(state: state, dropRate: dropRate, duplicateRate: duplicateRate) { envelope, state in
                    state.client = envelope.remoteAddress
                    return (back.eventLoop.makeSucceededFuture(back), AddressedEnvelope(remoteAddress: server, data: envelope.data))
                })
            }
            .bind(host: "127.0.0.1", port: 0).get()
        frontPromise.succeed(front)
        return LossyUDPProxy(address: front.localAddress!, front: front, back: back, state: state)
    }

    private init(address: SocketAddress, front: any Channel, back: any Channel, state: NIOLockedValueBox<State>) {
        self.address = address
        self.front = front
        self.back = back
        self.state = state
    }

    func stop() async {
        try? await front.close()
        try? await back.close()
    }

    private final class Relay: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias Route = @Sendable (AddressedEnvelope<ByteBuffer>, inout State) -> (EventLoopFuture<any Channel>, AddressedEnvelope<ByteBuffer>)?

        let state: NIOLockedValueBox<State>
        let dropRate: Double
        let duplicateRate: Double
        let route: Route

        init(state: NIOLockedValueBox<State>, dropRate: Double, duplicateRate: Double, route: @escaping Route) {
            self.state = state
            self.dropRate = dropRate
            self.duplicateRate = duplicateRate
            self.route = route
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            let decision: (copies: Int, route: (EventLoopFuture<any Channel>, AddressedEnvelope<ByteBuffer>)?) = state.withLockedValue { state in
                guard let route = route(envelope, &state) else { return (0, nil) }
                let roll = Double(state.generator.next() % 1_000_000) / 1_000_000
                if roll < dropRate {
                    state.counters.dropped += 1
                    return (0, route)
                }
                let duplicate = Double(state.generator.next() % 1_000_000) / 1_000_000 < duplicateRate
                state.counters.forwarded += 1
                if duplicate { state.counters.duplicated += 1 }
                return (duplicate ? 2 : 1, route)
            }
            guard let (channelFuture, outgoing) = decision.route, decision.copies > 0 else { return }
            let copies = decision.copies
            channelFuture.whenSuccess { channel in
                for _ in 0..<copies { channel.writeAndFlush(outgoing, promise: nil) }
            }
        }
    }
}
