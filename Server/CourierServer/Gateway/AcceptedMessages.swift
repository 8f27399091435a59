import CourierProtocol
import Foundation
import NIOConcurrencyHelpers

/// Messages the gateway has taken into the log and their chat has not stored yet, by sending
/// device and client message id. A retry of one of them (a new CoAP exchange, a client that
/// restarted) gets the same answer as the first send, not a second copy in the log; a retry
/// that arrives while the first append is still on its way waits for that append.
///
/// Bounded (`capacity`): the table is the distance between what devices were told is safe and
/// what chats have stored. When it is full the gateway answers 5.03, which also keeps consumer
/// lag bounded.
public final class AcceptedMessages: Sendable {
    public struct Key: Hashable, Sendable {
        public var deviceID: UInt64
        public var clientMessageID: String
    }

    /// What the first send of a message was given.
    public struct Acceptance: Sendable, Equatable {
        public var serverMessageID: UInt64
        public var chatID: UInt64
        public var text: String
        public var acceptedAtMilliseconds: Int64
    }

    public enum Claim: Sendable {
        /// The caller appends this message and then calls `finish`.
        case claimed
        /// Already in the log: answer as before (or 4.09 if the text or chat differ).
        case accepted(Acceptance)
        /// The table is full.
        case full
    }

    private enum State {
        /// `stored`: the chat stored it before the append's answer came back here.
        case appending(Acceptance, waiters: [CheckedContinuation<Acceptance?, Never>], stored: Bool)
        case inLog(Acceptance)
    }

    public let capacity: Int
    private let table = NIOLockedValueBox<[Key: State]>([:])

    public init(capacity: Int = 100_000) {
        self.capacity = capacity
    }

    public var count: Int { table.withLockedValue { $0.count } }

    /// Claims `key` for a first append of `acceptance`, or reports what happened to it before.
    public func claim(_ key: Key, _ acceptance: Acceptance) async -> Claim {
        enum Step { case done(Claim), wait }
        let step: Step = table.withLockedValue { table in
            switch table[key] {
            case .inLog(let earlier): return .done(.accepted(earlier))
            case .appending: return .wait
            case nil:
                guard table.count < capacity else { return .done(.full) }
                table[key] = .appending(acceptance, waiters: [], stored: false)
                return .done(.claimed)
            }
        }
        switch step {
        case .done(let claim):
            return claim
        case .wait:
            let earlier = await withCheckedContinuation { (continuation: CheckedContinuation<Acceptance?, Never>) in
                let immediate: Acceptance?? = table.withLockedValue { table in
                    switch table[key] {
                    case .appending(let pending, let waiters, let stored):
                        table[key] = .appending(pending, waiters: waiters + [continuation], stored: stored)
                        return .none
                    case .inLog(let earlier):
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
        let (waiters, acceptance) = table.withLockedValue { table -> ([CheckedContinuation<Acceptance?, Never>], Acceptance?) in
            guard case .appending(let acceptance, let waiters, let stored) = table[key] else { return ([], nil) }
            table[key] = inLog && !stored ? .inLog(acceptance) : nil
            return (waiters, inLog ? acceptance : nil)
        }
        for waiter in waiters { waiter.resume(returning: acceptance) }
    }

    /// The chat has stored (or refused) the message: storage answers retries from now on.
    public func release(_ key: Key) {
        table.withLockedValue { table in
            switch table[key] {
            case .inLog: table[key] = nil
            case .appending(let acceptance, let waiters, _): table[key] = .appending(acceptance, waiters: waiters, stored: true)
            case nil: break
            }
        }
    }
}
