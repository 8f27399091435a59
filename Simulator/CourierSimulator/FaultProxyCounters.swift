/// What a fault proxy did in one direction. `forwarded` counts every copy sent on (duplicates
/// and late duplicates included), so `received - dropped - partitioned + duplicated + lateSent`
/// equals `forwarded` once nothing is held.
public struct FaultProxyCounters: Sendable, Equatable, Codable {
    public var received = 0
    public var forwarded = 0
    public var dropped = 0
    public var duplicated = 0
    /// Held back and sent after a later datagram overtook it.
    public var reordered = 0
    /// Held back for reordering, but nothing came within `reorderHold`: sent alone, in order.
    public var reorderTimeouts = 0
    public var delayed = 0
    /// Dropped because they arrived (or a late duplicate fell due) inside the partition.
    public var partitioned = 0
    /// Copies kept for a late duplicate, and how many of them have been sent so far.
    public var lateHeld = 0
    public var lateSent = 0
    /// Late-duplicate draws refused because `maxLateDuplicates` copies were already held.
    public var lateRefused = 0

    public init() {}

    static func + (lhs: Self, rhs: Self) -> Self {
        var sum = Self()
        sum.received = lhs.received + rhs.received
        sum.forwarded = lhs.forwarded + rhs.forwarded
        sum.dropped = lhs.dropped + rhs.dropped
        sum.duplicated = lhs.duplicated + rhs.duplicated
        sum.reordered = lhs.reordered + rhs.reordered
        sum.reorderTimeouts = lhs.reorderTimeouts + rhs.reorderTimeouts
        sum.delayed = lhs.delayed + rhs.delayed
        sum.partitioned = lhs.partitioned + rhs.partitioned
        sum.lateHeld = lhs.lateHeld + rhs.lateHeld
        sum.lateSent = lhs.lateSent + rhs.lateSent
        sum.lateRefused = lhs.lateRefused + rhs.lateRefused
        return sum
    }

    /// One line for a person: "forwarded N, dropped N, ...".
    public var summary: String {
        "forwarded \(forwarded), dropped \(dropped), duplicated \(duplicated), reordered \(reordered), delayed \(delayed), partitioned \(partitioned), late duplicates \(lateSent)/\(lateHeld)"
    }
}
