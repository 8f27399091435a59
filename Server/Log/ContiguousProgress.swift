/// Which offset a consumer may commit when records finish out of order: the highest point
/// below which every record is processed ("selective progress of offset"). A record finished
/// ahead of a gap waits in `finishedAhead` until the gap closes, so a crash replays the gap
/// and everything after it, never skips it.
public struct ContiguousProgress: Sendable, Equatable {
    /// Every offset below this one is processed: the offset to commit and to resume from.
    public private(set) var committable: UInt64
    /// Processed offsets above a gap; as many as the consumer has records in flight, no more.
    private var finishedAhead: Set<UInt64> = []

    public init(resumingAt offset: UInt64) {
        committable = offset
    }

    /// Records that `offset` is processed; returns whether `committable` moved.
    @discardableResult
    public mutating func markProcessed(_ offset: UInt64) -> Bool {
        guard offset >= committable else { return false }  // a replay of something already committed
        guard offset == committable else {
            finishedAhead.insert(offset)
            return false
        }
        committable += 1
        while finishedAhead.remove(committable) != nil { committable += 1 }
        return true
    }

    /// Offsets processed beyond the first gap.
    public var waitingBeyondGap: Int { finishedAhead.count }
}
