import Foundation
import Synchronization

/// 64-bit ids that sort by creation time and are unique across nodes without coordination:
///
///     0 | 41 bits: ms since 2026-01-01 UTC | 10 bits: node | 12 bits: sequence within the ms
///
/// The top bit stays 0 so an id fits a signed 64-bit database column. 41 bits of milliseconds
/// last 69 years. Up to 4096 ids per millisecond per node; past that the generator borrows the
/// next millisecond rather than sleep, and it never goes back when the wall clock does.
public final class MessageIDGenerator: Sendable {
    public static let epoch = Date(timeIntervalSince1970: 1_767_225_600)  // 2026-01-01T00:00:00Z
    public static let nodeBits = 10
    public static let sequenceBits = 12
    public static let maxNodeID = (1 << nodeBits) - 1

    public let nodeID: Int
    private let clock: @Sendable () -> Date
    /// The last id's milliseconds and sequence as one number (`ms << sequenceBits | sequence`),
    /// so the next is one compare-and-swap: one past the last, or the clock's millisecond if
    /// that is later. A sequence past 4095 carries into the next millisecond by itself. Every
    /// send takes an id on an event loop; a lock here was one more that they queued on.
    /// Starting at 0, the first id takes sequence 0 of its millisecond (1 at the epoch's first).
    private let last = Atomic<UInt64>(0)

    public init(nodeID: Int, clock: @escaping @Sendable () -> Date = { Date() }) {
        precondition((0...Self.maxNodeID).contains(nodeID), "node id must be 0-\(Self.maxNodeID)")
        self.nodeID = nodeID
        self.clock = clock
    }

    public func next() -> UInt64 {
        // A clock before the epoch counts as the epoch (the ids stay unique and ordered).
        let now = UInt64(max(0, Int64((clock().timeIntervalSince(Self.epoch) * 1000).rounded(.down)))) << UInt64(Self.sequenceBits)
        var seen = last.load(ordering: .relaxed)
        while true {
            let candidate = max(now, seen + 1)
            let (exchanged, original) = last.compareExchange(expected: seen, desired: candidate, ordering: .relaxed)
            if exchanged { return id(candidate) }
            seen = original
        }
    }

    /// Never hands out `id` or anything below it again: called at startup with the highest id
    /// stored, so a wall clock that went back across a restart cannot repeat an id.
    public func advance(past id: UInt64) {
        let milliseconds = id >> UInt64(Self.nodeBits + Self.sequenceBits)
        // The next id takes the next millisecond.
        let floor = milliseconds << UInt64(Self.sequenceBits) | UInt64((1 << Self.sequenceBits) - 1)
        _ = last.max(floor, ordering: .relaxed)
    }

    private func id(_ millisecondsAndSequence: UInt64) -> UInt64 {
        let sequenceMask = UInt64((1 << Self.sequenceBits) - 1)
        return (millisecondsAndSequence >> UInt64(Self.sequenceBits)) << UInt64(Self.nodeBits + Self.sequenceBits)
            | UInt64(nodeID) << UInt64(Self.sequenceBits)
            | (millisecondsAndSequence & sequenceMask)
    }

    /// When an id was made, to the millisecond.
    public static func date(of id: UInt64) -> Date {
        epoch.addingTimeInterval(Double(id >> UInt64(nodeBits + sequenceBits)) / 1000)
    }

    /// The node that made an id.
    public static func node(of id: UInt64) -> Int {
        Int((id >> UInt64(sequenceBits)) & UInt64(maxNodeID))
    }
}
