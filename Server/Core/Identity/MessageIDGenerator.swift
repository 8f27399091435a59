import Foundation

/// 64-bit ids that sort by creation time and are unique across nodes without coordination:
///
///     0 | 41 bits: ms since 2026-01-01 UTC | 10 bits: node | 12 bits: sequence within the ms
///
/// The top bit stays 0 so an id fits a signed 64-bit database column. 41 bits of milliseconds
/// last 69 years. Up to 4096 ids per millisecond per node; past that the generator borrows the
/// next millisecond rather than sleep, and it never goes back when the wall clock does.
public final class MessageIDGenerator: @unchecked Sendable {
    // @unchecked: `lastMilliseconds` and `sequence` are guarded by `lock`.
    public static let epoch = Date(timeIntervalSince1970: 1_767_225_600)  // 2026-01-01T00:00:00Z
    public static let nodeBits = 10
    public static let sequenceBits = 12
    public static let maxNodeID = (1 << nodeBits) - 1

    public let nodeID: Int
    private let clock: @Sendable () -> Date
    private let lock = NSLock()
    private var lastMilliseconds: Int64 = -1
    private var sequence: Int64 = 0

    public init(nodeID: Int, clock: @escaping @Sendable () -> Date = { Date() }) {
        precondition((0...Self.maxNodeID).contains(nodeID), "node id must be 0-\(Self.maxNodeID)")
        self.nodeID = nodeID
        self.clock = clock
    }

    public func next() -> UInt64 {
        // A clock before the epoch counts as the epoch (the ids stay unique and ordered).
        let now = max(0, Int64((clock().timeIntervalSince(Self.epoch) * 1000).rounded(.down)))
        return lock.withLock {
            if now > lastMilliseconds {
                lastMilliseconds = now
                sequence = 0
            } else {
                sequence += 1
                if sequence >= 1 << Self.sequenceBits {
                    lastMilliseconds += 1
                    sequence = 0
                }
            }
            return UInt64(lastMilliseconds) << UInt64(Self.nodeBits + Self.sequenceBits)
                | UInt64(nodeID) << UInt64(Self.sequenceBits)
                | UInt64(sequence)
        }
    }

    /// Never hands out `id` or anything below it again: called at startup with the highest id
    /// stored, so a wall clock that went back across a restart cannot repeat an id.
    public func advance(past id: UInt64) {
        let milliseconds = Int64(id >> UInt64(Self.nodeBits + Self.sequenceBits))
        lock.withLock {
            if milliseconds >= lastMilliseconds {
                lastMilliseconds = milliseconds
                sequence = (1 << Self.sequenceBits) - 1  // the next id takes the next millisecond
            }
        }
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
