import CourierProtocol
import CourierStorage
import Foundation

/// The single writer of one chat: it checks membership, deduplicates by (sender device, client
/// message id), numbers each message with the next sequence and stores it, in that order, one
/// message at a time. A replayed record finds its dedup key and changes nothing.
public actor ChatEntity: ShardedEntity {
    public struct Context: Sendable {
        public var storage: any CourierStorage
        /// How often a chat may reload its members when a non-member sends (admins add
        /// members from another process, so a miss may be news).
        public var membershipRefreshInterval: Duration = .seconds(1)
    }

    public enum Outcome: Sendable, Equatable {
        /// Stored now, with this sequence number.
        case stored(StoredMessage)
        /// Already stored (a retry or a replay): nothing changed.
        case duplicate(StoredMessage)
        /// The device used this client message id for a different message: not stored.
        case conflict(StoredMessage)
        /// The sender is not a member: not stored.
        case notMember
    }

    public let id: UInt64
    private let context: Context
    private var members: Set<UInt64>
    private var lastSequence: UInt64
    private var membersLoadedAt: ContinuousClock.Instant
    private let clock = ContinuousClock()
    // Stores run one at a time, first come first served (see `exclusively`).
    private var storing = false
    private var waitingToStore: [CheckedContinuation<Void, Never>] = []

    private init(id: UInt64, context: Context, members: Set<UInt64>, lastSequence: UInt64) {
        self.id = id
        self.context = context
        self.members = members
        self.lastSequence = lastSequence
        self.membersLoadedAt = ContinuousClock.now
    }

    public static func activate(id: UInt64, context: Context) async throws -> ChatEntity {
        let chat = try await context.storage.chat(id: id)
        let members = try await context.storage.members(ofChat: id)
        return ChatEntity(id: id, context: context, members: members, lastSequence: chat.lastSequence)
    }

    public var memberIDs: Set<UInt64> { members }

    /// Whether `userID` may send here; reloads the members (at most once per refresh interval)
    /// before saying no.
    public func permits(_ userID: UInt64) async throws -> Bool {
        if members.contains(userID) { return true }
        guard clock.now - membersLoadedAt >= context.membershipRefreshInterval else { return false }
        members = try await context.storage.members(ofChat: id)
        membersLoadedAt = clock.now
        return members.contains(userID)
    }

    /// Numbers and stores messages the gateway accepted, in the given order, in one storage
    /// transaction; returns an outcome for each, in order.
    public func store(_ messages: [AcceptedMessage]) async throws -> [Outcome] {
        try await exclusively {
            var allowed: [UInt64: Bool] = [:]
            for sender in Set(messages.map(\.senderUserID)) { allowed[sender] = try await permits(sender) }
            let storable = messages.filter { allowed[$0.senderUserID]! }.map { message in
                StoredMessage(
                    serverMessageID: message.serverMessageID, chatID: id, sequence: 0,
                    senderUserID: message.senderUserID, senderDeviceID: message.senderDeviceID,
                    clientMessageID: message.clientMessageID, text: message.text,
                    clientSentAtMilliseconds: message.clientSentAtMs, acceptedAtMilliseconds: message.acceptedAtMs
                )
            }
            var stored: [StoreOutcome] = []
            if !storable.isEmpty {
                do {
                    stored = try await context.storage.storeMessages(storable, chatID: id, afterSequence: lastSequence)
                } catch StorageError.sequenceConflict(let chat, let expected, let found) {
                    // Someone else wrote this chat: take storage's word, and let the caller retry.
                    lastSequence = found
                    throw StorageError.sequenceConflict(chatID: chat, expected: expected, found: found)
                }
            }
            var next = stored.makeIterator()
            return messages.map { message -> Outcome in
                guard allowed[message.senderUserID]! else { return .notMember }
                switch next.next()! {
                case .stored(let message):
                    lastSequence = max(lastSequence, message.sequence)
                    return .stored(message)
                case .duplicate(let existing): return .duplicate(existing)
                case .conflict(let existing): return .conflict(existing)
                }
            }
        }
    }

    /// Numbers and stores one message (see the batch form).
    public func store(_ message: AcceptedMessage) async throws -> Outcome {
        try await store([message])[0]
    }

    private func exclusively<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        if storing {
            await withCheckedContinuation { waitingToStore.append($0) }
        } else {
            storing = true
        }
        defer {
            if waitingToStore.isEmpty {
                storing = false
            } else {
                waitingToStore.removeFirst().resume()
            }
        }
        return try await body()
    }
}
