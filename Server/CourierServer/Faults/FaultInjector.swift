import NIOConcurrencyHelpers

/// Counts the messages the consumers process, across the whole process and in the order they
/// process them, and says which of them a `TestFaults` fault befalls. When both faults fall on
/// the same message, it is dropped.
public final class FaultInjector: Sendable {
    public enum Fault: Sendable, Equatable {
        /// Stored and pushed as usual.
        case unaffected
        case drop
        /// Store the message a second time, under this new server message id.
        case duplicate(copyID: UInt64)
    }

    public let faults: TestFaults
    private let ids: MessageIDGenerator
    private let processed = NIOLockedValueBox(0)

    public init(faults: TestFaults, ids: MessageIDGenerator) {
        self.faults = faults
        self.ids = ids
    }

    /// The fault for the next message processed.
    public func next() -> Fault {
        let count = processed.withLockedValue { count in
            count += 1
            return count
        }
        if let every = faults.dropEvery, count % every == 0 { return .drop }
        if let every = faults.duplicateEvery, count % every == 0 { return .duplicate(copyID: ids.next()) }
        return .unaffected
    }
}
