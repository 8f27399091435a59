import NIOCore
import Synchronization

/// Faults an endpoint injects into its own datagrams, to test what sits above it under loss
/// and duplication. Each is a probability (0-1), applied to every datagram independently.
public struct DatagramFaults: Sendable, Equatable {
    public var dropOutgoing: Double
    public var dropIncoming: Double
    public var duplicateOutgoing: Double
    public var duplicateIncoming: Double
    /// Seeds the endpoint's generator, so the same seed drops the same datagrams.
    public var seed: UInt64

    public init(dropOutgoing: Double = 0, dropIncoming: Double = 0, duplicateOutgoing: Double = 0, duplicateIncoming: Double = 0, seed: UInt64) {
        self.dropOutgoing = dropOutgoing
        self.dropIncoming = dropIncoming
        self.duplicateOutgoing = duplicateOutgoing
        self.duplicateIncoming = duplicateIncoming
        self.seed = seed
    }
}

/// What endpoints report as they go; one instance may be shared by many endpoints (a fleet).
public final class CoAPCounters: Sendable {
    /// Confirmable messages sent again because no ACK came in time.
    public let retransmissions = Atomic<Int>(0)
    /// Datagrams the fault injector dropped or sent twice.
    public let faultDrops = Atomic<Int>(0)
    public let faultDuplicates = Atomic<Int>(0)

    public init() {}
}

/// Sits between the socket and the CoAP handler and applies `DatagramFaults` both ways.
final class DatagramFaultHandler: ChannelDuplexHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias InboundOut = AddressedEnvelope<ByteBuffer>
    typealias OutboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let faults: DatagramFaults
    private let counters: CoAPCounters?
    private var random: SplitMix64

    init(faults: DatagramFaults, counters: CoAPCounters?) {
        self.faults = faults
        self.counters = counters
        random = SplitMix64(seed: faults.seed)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if happens(faults.dropIncoming) {
            counters?.faultDrops.add(1, ordering: .relaxed)
            return
        }
        if happens(faults.duplicateIncoming) {
            counters?.faultDuplicates.add(1, ordering: .relaxed)
            context.fireChannelRead(data)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if happens(faults.dropOutgoing) {
            counters?.faultDrops.add(1, ordering: .relaxed)
            promise?.succeed()
            return
        }
        if happens(faults.duplicateOutgoing) {
            counters?.faultDuplicates.add(1, ordering: .relaxed)
            context.write(data, promise: nil)
        }
        context.write(data, promise: promise)
    }

    private func happens(_ probability: Double) -> Bool {
        probability > 0 && Double.random(in: 0..<1, using: &random) < probability
    }
}
