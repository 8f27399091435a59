import CoAP
import NIOCore

/// The fault proxy's decisions, with no sockets: each datagram that arrives goes in with the
/// time since start, and out come the copies to send and when. `due(now:)` hands back what was
/// held (a reordered datagram whose hold ran out, a late duplicate whose time came).
///
/// Every arrival takes the same five draws (drop, duplicate, reorder, late duplicate, delay)
/// whatever is decided, so arrival N meets the same faults under the same seed however the
/// earlier ones went. `Flow` names a device (the relay uses its address); `Payload` is the bytes.
public struct FaultProxyState<Flow: Hashable & Sendable, Payload: Sendable>: Sendable {
    /// One copy to send: `delay` after the moment of the call that returned it.
    public struct Emission: Sendable {
        public var flow: Flow
        public var direction: FaultDirection
        public var payload: Payload
        public var delay: Duration
    }

    private struct Held: Sendable {
        var flow: Flow
        var payload: Payload
        var delay: Duration
        var release: Duration
    }

    public let plan: FaultProxyPlan
    private var random: SplitMix64
    private var counters: [FaultDirection: FaultProxyCounters] = [.upstream: .init(), .downstream: .init()]
    /// At most one datagram per direction waits to be overtaken.
    private var reorderSlot: [FaultDirection: Held] = [:]
    /// Copies for late duplicates, in the order they fall due (`lateAfter` is the same for all);
    /// never more than `plan.maxLateDuplicates`.
    private var late = CircularBuffer<(direction: FaultDirection, held: Held)>()

    public init(plan: FaultProxyPlan) {
        self.plan = plan
        random = SplitMix64(seed: plan.seed)
    }

    public func counters(_ direction: FaultDirection) -> FaultProxyCounters { counters[direction]! }
    public var totals: FaultProxyCounters { counters(.upstream) + counters(.downstream) }
    public var lateDuplicatesHeld: Int { late.count }

    /// A datagram arrived at `now`: what to send, in order.
    public mutating func received(_ payload: Payload, flow: Flow, direction: FaultDirection, now: Duration) -> [Emission] {
        let drops = draw(plan.drop)
        let duplicates = draw(plan.duplicate)
        let reorders = draw(plan.reorder)
        let lateCopy = draw(plan.lateDuplicate)
        let delay = drawDelay()
        counters[direction]!.received += 1

        if plan.partitioned(at: now) {
            counters[direction]!.partitioned += 1
            return []
        }
        if drops {
            counters[direction]!.dropped += 1
            return []
        }
        if delay > .zero { counters[direction]!.delayed += 1 }
        let this = Held(flow: flow, payload: payload, delay: delay, release: now + plan.reorderHold)
        if lateCopy {
            if late.count < plan.maxLateDuplicates {
                late.append((direction, Held(flow: flow, payload: payload, delay: .zero, release: now + plan.lateAfter)))
                counters[direction]!.lateHeld += 1
            } else {
                counters[direction]!.lateRefused += 1
            }
        }

        var out: [Emission] = []
        if let waiting = reorderSlot.removeValue(forKey: direction) {
            // This one overtakes the held one, which goes right after it.
            out += send(this, direction, twice: duplicates)
            counters[direction]!.reordered += 1
            out += send(waiting, direction, twice: false)
        } else if reorders {
            reorderSlot[direction] = this
            // A held datagram is not also duplicated; its duplicate draw is spent all the same.
        } else {
            out += send(this, direction, twice: duplicates)
        }
        return out
    }

    /// What falls due by `now`: reordered datagrams nothing overtook, and late duplicates
    /// (dropped if they fall due inside the partition).
    public mutating func due(now: Duration) -> [Emission] {
        var out: [Emission] = []
        for direction in FaultDirection.allCases {
            if let waiting = reorderSlot[direction], waiting.release <= now {
                reorderSlot[direction] = nil
                counters[direction]!.reorderTimeouts += 1
                out += send(waiting, direction, twice: false)
            }
        }
        while let first = late.first, first.held.release <= now {
            late.removeFirst()
            if plan.partitioned(at: now) {
                counters[first.direction]!.partitioned += 1
                continue
            }
            counters[first.direction]!.lateSent += 1
            out += send(first.held, first.direction, twice: false)
        }
        return out
    }

    /// The earliest time `due(now:)` has something to hand back, if anything is held.
    public var nextDue: Duration? {
        let times = reorderSlot.values.map(\.release) + (late.first.map { [$0.held.release] } ?? [])
        return times.min()
    }

    private mutating func send(_ held: Held, _ direction: FaultDirection, twice: Bool) -> [Emission] {
        let emission = Emission(flow: held.flow, direction: direction, payload: held.payload, delay: held.delay)
        counters[direction]!.forwarded += twice ? 2 : 1
        if twice { counters[direction]!.duplicated += 1 }
        return twice ? [emission, emission] : [emission]
    }

    private mutating func draw(_ probability: Double) -> Bool {
        // Drawn even at probability 0, so every arrival takes the same draws.
        let value = Double(random.next() >> 11) * 0x1p-53
        return value < probability
    }

    private mutating func drawDelay() -> Duration {
        let value = Double(random.next() >> 11) * 0x1p-53
        let span = plan.delay.upperBound - plan.delay.lowerBound
        return plan.delay.lowerBound + span * value
    }
}
