import NIOCore

/// Message-layer timing and limits (RFC 7252 §4.8), plus the bounds this implementation keeps.
public struct CoAPTransmissionParameters: Sendable, Hashable {
    public var ackTimeout: TimeAmount = .seconds(2)
    public var ackRandomFactor: Double = 1.5
    public var maxRetransmit: Int = 4
    /// Outstanding interactions per peer (RFC 7252 §4.7).
    public var nstart: Int = 1
    public var maxLatency: TimeAmount = .seconds(100)

    /// How long a server waits for its handler before sending an empty ACK and answering separately.
    public var piggybackWindow: TimeAmount = .milliseconds(500)
    /// How long a client waits for a separate response after an empty ACK.
    public var separateResponseTimeout: TimeAmount = .seconds(93)

    /// Remembered (peer, Message ID) pairs; the oldest is forgotten first at the bound.
    public var deduplicationCapacity: Int = 100_000
    /// Requests handed to the application and not yet answered; beyond it the layer answers 5.03.
    public var maxRequestsInFlight: Int = 4_096
    /// Own requests waiting for an NSTART slot or a response; beyond it `request` fails at once.
    public var maxPendingRequests: Int = 8_192
    /// Separate responses awaiting their ACK; beyond it they go out Non-confirmable.
    public var maxConfirmableResponses: Int = 8_192
    /// Max-Age sent with a 5.03 when the layer itself is full.
    public var overloadMaxAge: UInt32 = 2

    public init() {}

    /// ACK_TIMEOUT * (2^MAX_RETRANSMIT - 1) * ACK_RANDOM_FACTOR: 45 s by default.
    public var maxTransmitSpan: TimeAmount {
        scaled(ackTimeout, by: Double((1 << maxRetransmit) - 1) * ackRandomFactor)
    }

    /// MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY + PROCESSING_DELAY (= ACK_TIMEOUT): 247 s by default.
    public var exchangeLifetime: TimeAmount {
        maxTransmitSpan + maxLatency + maxLatency + ackTimeout
    }

    /// How late a retransmission may go, a twentieth of ACK_TIMEOUT (100 ms by default): one
    /// timer serves every confirmable of a socket, checks come at most this often, and a
    /// deadline this close before the armed check waits for it. Late is safe (the peer's
    /// duplicate detection spans far longer); early would not be.
    public var retransmissionCheckSlack: TimeAmount { .nanoseconds(ackTimeout.nanoseconds / 20) }

    /// The first retransmission timeout: ACK_TIMEOUT scaled by a factor in [1, ACK_RANDOM_FACTOR].
    /// `jitter` in [0, 1] picks the point, so callers inject randomness and tests stay deterministic.
    public func initialTimeout(jitter: Double) -> TimeAmount {
        let clamped = min(max(jitter, 0), 1)
        return scaled(ackTimeout, by: 1 + (ackRandomFactor - 1) * clamped)
    }

    private func scaled(_ amount: TimeAmount, by factor: Double) -> TimeAmount {
        .nanoseconds(Int64(Double(amount.nanoseconds) * factor))
    }
}
