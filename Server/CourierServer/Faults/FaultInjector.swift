import Foundation
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
    private let commits = NIOLockedValueBox(0)
    private let chatStoreFailingSince = NIOLockedValueBox<ContinuousClock.Instant?>(nil)

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

    /// Called just before a consumer commits an offset: at the configured commit the process
    /// dies at once, as `kill -9` would, with the batch stored and pushed but not committed.
    public func beforeCommit() {
        guard let crashAt = faults.crashBeforeCommit else { return }
        let count = commits.withLockedValue { count in
            count += 1
            return count
        }
        if count == crashAt {
            FileHandle.standardError.write(Data("TEST FAULT: killed before offset commit \(count)\n".utf8))
            kill(getpid(), SIGKILL)
        }
    }

    /// Whether a store into `chatID` fails now (storage unavailable).
    public func chatStoreFails(_ chatID: UInt64) -> Bool {
        guard let failing = faults.failChatStore, failing.chatID == chatID else { return false }
        let since = chatStoreFailingSince.withLockedValue { since in
            if since == nil { since = .now }
            return since!
        }
        return ContinuousClock.now - since < failing.duration
    }
}
