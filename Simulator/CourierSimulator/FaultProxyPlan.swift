/// What a fault proxy does to the datagrams it relays. Rates are probabilities (0-1), drawn for
/// every datagram in each direction (device -> server and server -> device) from one generator
/// seeded with `seed`, so the same seed and the same arrivals give the same faults.
public struct FaultProxyPlan: Sendable, Equatable {
    /// Dropped.
    public var drop = 0.0
    /// Sent twice, back to back.
    public var duplicate = 0.0
    /// Held back until the next datagram in the same direction has gone (or `reorderHold` passed).
    public var reorder = 0.0
    /// Each datagram waits a time drawn uniformly from this range (zero: none).
    public var delay: ClosedRange<Duration> = .zero ... .zero
    /// Kept and sent once more `lateAfter` later, e.g. past CoAP's EXCHANGE_LIFETIME (247 s),
    /// so the server sees a retry that only the application's dedup can catch.
    public var lateDuplicate = 0.0
    public var lateAfter: Duration = .seconds(250)
    /// Everything that arrives in this window (time since start) is dropped, both ways.
    public var partition: Range<Duration>?
    /// The longest a reordered datagram waits for a later one to overtake it.
    public var reorderHold: Duration = .milliseconds(200)
    /// Bound on datagrams held for a late duplicate; at the bound, no new copy is kept (counted
    /// as `lateRefused`) until a held one has been sent.
    public var maxLateDuplicates = 10_000
    public var seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// The datagram arriving at `now` (time since start) falls in the partition.
    func partitioned(at now: Duration) -> Bool {
        partition?.contains(now) ?? false
    }
}

/// Which way a datagram travels through the proxy.
public enum FaultDirection: String, Sendable, CaseIterable, Codable {
    /// From a device to the server.
    case upstream
    /// From the server back to a device.
    case downstream
}
