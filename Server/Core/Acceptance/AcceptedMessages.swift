import CourierProtocol
import Foundation
import Synchronization

/// The gateway's memory of recent sends, by sending device and client message id, so that a
/// retry (a new CoAP exchange, a client that restarted) gets the same answer as the first send
/// instead of a second copy in the log:
///
/// - messages taken into the log that their chat has not stored yet (a retry that arrives while
///   the first append is still on its way waits for that append);
/// - messages stored recently, with their sequence, so most retries need no database read.
///
/// Bounded: at most `capacity` messages waiting to be stored (the distance between what
/// devices were told is safe and what chats have stored; when full the gateway answers 5.03,
/// which also bounds consumer lag), and at most `storedCapacity` recently stored ones (the
/// oldest are forgotten; a retry of those asks the database). Texts are kept as digests.
public final class AcceptedMessages: Sendable {
    public struct Key: Hashable, Sendable {
        public var deviceID: UInt64
        public var clientMessageID: String

        public init(deviceID: UInt64, clientMessageID: String) {
            self.deviceID = deviceID
            self.clientMessageID = clientMessageID
        }
    }

    /// What the first send of a message was given.
    public struct Acceptance: Sendable, Equatable {
        public var serverMessageID: UInt64
        public var chatID: UInt64
        /// A digest of the text and change, to tell a retry from a reused id (4.09).
        public var textDigest: Int
        public var acceptedAtMilliseconds: Int64
        /// The chat sequence once stored; 0 before.
        public var sequence: UInt64 = 0

        public init(serverMessageID: UInt64, chatID: UInt64, text: String, change: MessageChange? = nil, acceptedAtMilliseconds: Int64) {
            self.serverMessageID = serverMessageID
            self.chatID = chatID
            self.textDigest = Self.digest(text, change)
            self.acceptedAtMilliseconds = acceptedAtMilliseconds
        }

        /// Whether a send of `text` (with `change`) into `chatID` is this same message.
        public func matches(chatID: UInt64, text: String, change: MessageChange? = nil) -> Bool {
            self.chatID == chatID && textDigest == Self.digest(text, change)
        }

        static func digest(_ text: String, _ change: MessageChange?) -> Int {
            var hasher = Hasher()
            hasher.combine(text)
            hasher.combine(change)
            return hasher.finalize()
        }
    }

    public enum Claim: Sendable {
        /// The caller appends this message and then calls `finish`.
        case claimed
        /// Already in the log (and stored, if `sequence` is set): answer as before, or 4.09 if
        /// the text or chat differ.
        case accepted(Acceptance)
        /// Too many messages wait to be stored.
        case full
    }

    /// What the chat did with a message.
    public enum Settlement: Sendable, Equatable {
        /// Stored (now or before) under this id and sequence.
        case stored(serverMessageID: UInt64, sequence: UInt64)
        /// Not stored (not a member, a reused id, no such chat).
        case refused
    }

    private enum State {
        /// `settled`: the chat dealt with it before the append's answer came back here.
        case appending(Acceptance, waiters: [CheckedContinuation<Acceptance?, Never>], settled: Settlement?)
        case inLog(Acceptance)
        case stored(Acceptance)
    }

    private struct Table {
        var states: [Key: State] = [:]
        var waitingToBeStored = 0
        /// Stored keys, oldest first (from `oldest` on); entries may have left already.
        var storedOrder: [Key] = []
        var oldest = 0
        var storedCount = 0
    }

    public let capacity: Int
    public let storedCapacity: Int
    private let table = Mutex(Table())

    public init(capacity: Int = 100_000, storedCapacity: Int = 100_000) {
        self.capacity = capacity
        self.storedCapacity = storedCapacity
    }

    /// Messages in the log and not yet stored.
    public var count: Int { table.withLock { $0.waitingToBeStored } }

    /// Claims `key` for a first append of `acceptance`, or reports what happened to it before.
    public func claim(_ key: Key, _ acceptance: Acceptance) async -> Claim {
        enum Step { case done(Claim), wait }
        let step: Step = table.withLock { table in
            switch table.states[key] {
            case .inLog(let earlier), .stored(let earlier): return .done(.accepted(earlier))
            case .appending: return .wait
            case nil:
                guard table.waitingToBeStored < capacity else { return .done(.full) }
                table.states[key] = .appending(acceptance, waiters: [], settled: nil)
                table.waitingToBeStored += 1
                return .done(.claimed)
            }
        }
        switch step {
        case .done(let claim):
            return claim
        case .wait:
            let earlier = await withCheckedContinuation { (continuation: CheckedContinuation<Acceptance?, Never>) in
                let immediate: Acceptance?? = table.withLock { table in
                    switch table.states[key] {
                    case .appending(let pending, let waiters, let settled):
                        table.states[key] = .appending(pending, waiters: waiters + [continuation], settled: settled)
                        return .none
                    case .inLog(let earlier), .stored(let earlier):
                        return .some(earlier)
                    case nil:
                        return .some(nil)
                    }
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
            // The first append failed (the claim is free again): try to claim it ourselves.
            guard let earlier else { return await claim(key, acceptance) }
            return .accepted(earlier)
        }
    }

    /// The claimed append is durable (`inLog`) or failed (the claim is dropped).
    public func finish(_ key: Key, inLog: Bool) {
        let (waiters, acceptance) = table.withLock { table -> ([CheckedContinuation<Acceptance?, Never>], Acceptance?) in
            guard case .appending(var acceptance, let waiters, let settled) = table.states[key] else { return ([], nil) }
            table.waitingToBeStored -= 1
            guard inLog else {
                table.states[key] = nil
                return (waiters, nil)
            }
            switch settled {
            case .stored(let serverMessageID, let sequence)?:
                acceptance.serverMessageID = serverMessageID
                acceptance.sequence = sequence
                Self.remember(key, acceptance, in: &table, capacity: storedCapacity)
            case .refused?:
                table.states[key] = nil
            case nil:
                table.states[key] = .inLog(acceptance)
                table.waitingToBeStored += 1
            }
            return (waiters, acceptance)
        }
        for waiter in waiters { waiter.resume(returning: acceptance) }
    }

    /// The chat has dealt with the message. A stored one is remembered for retries, with the id
    /// and sequence storage holds (for a duplicate, those of the first copy); a refused one is
    /// forgotten.
    public func settle(_ key: Key, _ settlement: Settlement) {
        table.withLock { Self.settle(key, settlement, in: &$0, storedCapacity: storedCapacity) }
    }

    /// `settle` for a whole stored batch, `settledPerLock` messages under one lock: the
    /// consumers' thread took the lock once per message, each time in the way of the gateway's
    /// event loops; a chunk bounds how long a claim can wait behind it.
    public func settle(_ settlements: [(Key, Settlement)]) {
        for start in stride(from: 0, to: settlements.count, by: Self.settledPerLock) {
            table.withLock { table in
                for (key, settlement) in settlements[start..<min(start + Self.settledPerLock, settlements.count)] {
                    Self.settle(key, settlement, in: &table, storedCapacity: storedCapacity)
                }
            }
        }
    }

    private static let settledPerLock = 256

    private static func settle(_ key: Key, _ settlement: Settlement, in table: inout Table, storedCapacity: Int) {
        switch table.states[key] {
        case .inLog(var acceptance):
            table.waitingToBeStored -= 1
            if case .stored(let serverMessageID, let sequence) = settlement {
                acceptance.serverMessageID = serverMessageID
                acceptance.sequence = sequence
                remember(key, acceptance, in: &table, capacity: storedCapacity)
            } else {
                table.states[key] = nil
            }
        case .appending(let acceptance, let waiters, _):
            table.states[key] = .appending(acceptance, waiters: waiters, settled: settlement)
        case .stored, nil:
            break
        }
    }

    private static func remember(_ key: Key, _ acceptance: Acceptance, in table: inout Table, capacity: Int) {
        table.states[key] = .stored(acceptance)
        table.storedOrder.append(key)
        table.storedCount += 1
        while table.storedCount > capacity, table.oldest < table.storedOrder.count {
            let old = table.storedOrder[table.oldest]
            table.oldest += 1
            if case .stored = table.states[old] {
                table.states[old] = nil
                table.storedCount -= 1
            }
        }
        // Compact the order list once half of it is gone.
        if table.oldest > 1024 && table.oldest * 2 > table.storedOrder.count {
            table.storedOrder.removeFirst(table.oldest)
            table.oldest = 0
        }
    }
}
