import CourierCore
import CourierProtocol
import Foundation
import Synchronization

/// One chat's live state beside its history: who may send (checked by the gateway before a
/// message enters the log) and which delivery receipts are due. Numbering and storing are the
/// consumers' store transaction's (see `ChatConsumers`), which re-checks membership inside it.
public actor ChatEntity: ShardedEntity {
    public struct Context: Sendable {
        public var storage: any ServerStorage
        /// How often a chat may reload its members when a non-member sends (admins add
        /// members from another process, so a miss may be news).
        public var membershipRefreshInterval: Duration = .seconds(1)
        /// Where receipts find the messages just stored, before asking storage.
        package var recent: RecentMessages?

        public init(storage: any ServerStorage) {
            self.storage = storage
        }
    }

    public let id: UInt64
    private let context: Context
    /// Behind a lock as well as the actor, so that the gateway's check of a member (every send)
    /// needs no hop onto the actor and back (`isKnownMember`); changed only on the actor.
    private let members: Mutex<Set<UInt64>>
    private var membersLoadedAt: ContinuousClock.Instant
    private let clock = ContinuousClock()

    private init(id: UInt64, context: Context, members: Set<UInt64>) {
        self.id = id
        self.context = context
        self.members = Mutex(members)
        self.membersLoadedAt = ContinuousClock.now
    }

    public static func activate(id: UInt64, context: Context) async throws -> ChatEntity {
        // Throws notFound for a chat that does not exist.
        _ = try await context.storage.chat(id: id)
        let members = try await context.storage.members(ofChat: id)
        let entity = ChatEntity(id: id, context: context, members: members)
        await entity.loadReceiptCursors(try await context.storage.memberDeviceCursors(chatID: id, now: Date()))
        return entity
    }

    /// Whether `userID` may send here; reloads the members (at most once per refresh interval)
    /// before saying no.
    public func permits(_ userID: UInt64) async throws -> Bool {
        if isKnownMember(userID) { return true }
        guard clock.now - membersLoadedAt >= context.membershipRefreshInterval else { return false }
        try await reloadMembers()
        return isKnownMember(userID)
    }

    /// Whether `userID` is a member as far as this chat knows now, without reloading: a yes
    /// is `permits`' yes; a no must still ask `permits`, which may reload.
    public nonisolated func isKnownMember(_ userID: UInt64) -> Bool {
        members.withLock { $0.contains(userID) }
    }

    /// A user became a member (the gateway stored it just now): they may send, and their
    /// devices get the chat's next messages, from now on rather than after the next reload.
    public func memberAdded(_ userID: UInt64) {
        members.withLock { _ = $0.insert(userID) }
        if reloadsInFlight > 0 { addedDuringReload.insert(userID) }
    }

    /// A user left the chat (the gateway stored it just now): they may no longer send, and
    /// receipts stop waiting for their devices.
    public func memberRemoved(_ userID: UInt64) {
        members.withLock { _ = $0.remove(userID) }
        addedDuringReload.remove(userID)
        if reloadsInFlight > 0 { removedDuringReload.insert(userID) }
        receiptCursors[userID] = nil
    }

    // A reload may have read storage before a member was added or removed and finish after
    // `memberAdded` or `memberRemoved`; what was announced meanwhile stands.
    private var reloadsInFlight = 0
    private var addedDuringReload: Set<UInt64> = []
    private var removedDuringReload: Set<UInt64> = []

    private func reloadMembers() async throws {
        reloadsInFlight += 1
        defer {
            reloadsInFlight -= 1
            if reloadsInFlight == 0 {
                addedDuringReload = []
                removedDuringReload = []
            }
        }
        let loaded = try await context.storage.members(ofChat: id).union(addedDuringReload).subtracting(removedDuringReload)
        members.withLock { $0 = loaded }
        membersLoadedAt = clock.now
    }

    // MARK: Delivery receipts

    /// The receipts due to one sender's devices.
    public struct Receipts: Sendable {
        public var senderUserID: UInt64
        public var receipts: [DeliveryReceipt]
    }

    /// The most receipts one acknowledgement releases per sender; past it only the newest go
    /// (receipts are a courtesy, not replayed; the messages themselves are).
    static let maxReceiptsPerAcknowledgement: UInt64 = 2_048

    /// Member devices' cursors per user, loaded at activation (before the acknowledgements
    /// that follow it) and then kept up to date by them.
    private var receiptCursors: [UInt64: [UInt64: UInt64]] = [:]
    /// Per sender: receipts went out for the sender's messages through this sequence. What was
    /// delivered before activation counts as receipted (receipts are not replayed).
    private var receiptedThrough: [UInt64: UInt64] = [:]

    private func loadReceiptCursors(_ rows: [MemberDeviceCursor]) {
        for row in rows { receiptCursors[row.userID, default: [:]][row.deviceID] = row.sequence }
        let lowest = Self.lowestPerUser(receiptCursors)
        for sender in receiptCursors.keys { receiptedThrough[sender] = Self.deliveredThrough(sender, lowest) }
    }

    /// The devices whose acknowledgements have come here since activation (see `acknowledged`);
    /// bounded by the member devices.
    private var acknowledgedSinceActivation: Set<UInt64> = []
    /// Per sender: the receipts this activation claimed, through this sequence (bounded by the
    /// members). The reset in `acknowledged` never goes below it: never twice from one activation.
    private var claimedSinceActivation: [UInt64: UInt64] = [:]

    /// A member device acknowledged this chat from `from` through `to`. A message is delivered
    /// once every device of every other member has acknowledged it; returns the receipts that
    /// this acknowledgement completes for the senders that `connected` says have a device
    /// connected here (the others' are claimed all the same: receipts are not replayed).
    public func acknowledged(userID: UInt64, deviceID: UInt64, from: UInt64, to: UInt64, connected: @Sendable (UInt64) -> Bool = { _ in true }) async throws -> [Receipts] {
        if acknowledgedSinceActivation.insert(deviceID).inserted {
            // A cursor is stored before its acknowledgement comes here, so an actor activated
            // meanwhile has loaded it already: without this, what it completes would count as
            // receipted before activation and never go out. Per device: the first
            // acknowledgement after activation may be another device's (a sender's own device
            // acknowledging on this node while a recipient's news is on its way from another).
            // (At worst a receipt an earlier activation sent goes out again; a device applies
            // it once.)
            if let loaded = receiptCursors[userID]?[deviceID], loaded > from {
                receiptCursors[userID]![deviceID] = from
                let lowest = Self.lowestPerUser(receiptCursors)
                for sender in receiptCursors.keys {
                    let reset = min(receiptedThrough[sender] ?? 0, Self.deliveredThrough(sender, lowest))
                    receiptedThrough[sender] = max(reset, claimedSinceActivation[sender] ?? 0)
                }
            }
        }
        // A device unknown here (new since activation) stood at `from` before this.
        let before = receiptCursors[userID]?[deviceID] ?? from
        receiptCursors[userID, default: [:]][deviceID] = max(before, to)
        let cursors = receiptCursors
        let lowest = Self.lowestPerUser(cursors)
        var due: [(sender: UInt64, after: UInt64, through: UInt64)] = []
        for sender in cursors.keys {
            let through = Self.deliveredThrough(sender, lowest)
            let done = receiptedThrough[sender] ?? 0
            guard through > done else { continue }
            // Claimed before any await, so a concurrent acknowledgement cannot send these twice.
            receiptedThrough[sender] = through
            claimedSinceActivation[sender] = through
            due.append((sender, max(done, through > Self.maxReceiptsPerAcknowledgement ? through - Self.maxReceiptsPerAcknowledgement : 0), through))
        }
        var result: [Receipts] = []
        for (sender, start, through) in due where connected(sender) {
            var receipts: [DeliveryReceipt] = []
            // From memory when the consumers still hold the whole range; else from storage.
            var after = start
            if let recent = context.recent?.range(of: id, after: start, through: through) {
                receipts = recent.filter { $0.entry.senderUserID == sender }.map {
                    DeliveryReceipt(chatID: id, chatSequence: $0.sequence, serverMessageID: $0.entry.serverMessageID, clientMessageID: $0.entry.clientMessageID)
                }
                after = through
            }
            while after < through {
                let page = try await context.storage.history(chatID: id, afterSequence: after, limit: Int(min(512, through - after)))
                guard let last = page.last else { break }
                receipts += page.filter { $0.senderUserID == sender }.map {
                    DeliveryReceipt(chatID: id, chatSequence: $0.sequence, serverMessageID: $0.serverMessageID, clientMessageID: $0.clientMessageID)
                }
                after = last.sequence
            }
            if !receipts.isEmpty {
                result.append(Receipts(senderUserID: sender, receipts: receipts))
            }
        }
        return result
    }

    private static func lowestPerUser(_ cursors: [UInt64: [UInt64: UInt64]]) -> [UInt64: UInt64] {
        cursors.compactMapValues { $0.values.min() }
    }

    /// The sequence through which every device of every member but `sender` has acknowledged;
    /// 0 when no other member has a device.
    private static func deliveredThrough(_ sender: UInt64, _ lowest: [UInt64: UInt64]) -> UInt64 {
        lowest.filter { $0.key != sender }.values.min() ?? 0
    }
}
