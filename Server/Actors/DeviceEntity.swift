import CourierCore
import CourierProtocol
import Foundation
import Logging
import Synchronization

/// One device and its push session. While a session is attached, the device receives every
/// message of its user's chats, per chat in sequence order with no gap: what follows its
/// starting cursor is replayed from storage, then new messages are pushed as the consumers
/// store them. The delivery cursor advances only when the device acknowledges; pushes left
/// unacknowledged past the acknowledgement timeout are sent again.
///
/// One rule makes the seam between replay and live pushes exact: `sent` is the only position
/// per chat, and a message goes out only when its sequence is `sent + 1`. A live message that
/// cannot go out at once (a replay is running, the window or the session's queue is full)
/// only raises `known`, and the pump fetches it from storage in its turn.
public actor DeviceEntity: ShardedEntity {
    public struct Context: Sendable {
        public var storage: any ServerStorage
        /// Pushes of one chat that may await acknowledgement; the pump stops at this many.
        public var maxUnackedPerChat: UInt64 = 1_000
        /// A push still unacknowledged this long is sent again (with everything after it).
        public var ackTimeout: Duration = .seconds(10)
        public var metrics: ServerMetrics?
        public var logger = Logger(label: "courier.device")

        public init(storage: any ServerStorage) {
            self.storage = storage
        }
    }

    /// Where one chat's delivery to this device stands.
    struct ChatDelivery {
        /// The stored delivery cursor: acknowledged through here.
        var acked: UInt64
        /// Pushed (in this session) through here; never behind what the device said it holds.
        var sent: UInt64
        /// The chat is known to hold messages through here.
        var known: UInt64
        /// Since when pushes have waited for an acknowledgement without progress.
        var waitingSince: ContinuousClock.Instant?

        var unacked: UInt64 { sent > acked ? sent - acked : 0 }
    }

    public let id: UInt64
    public let userID: UInt64
    private let context: Context
    private var session: SessionLink?
    /// Per chat of the user, while a session is attached. Bounded by the user's chats.
    private var chats: [UInt64: ChatDelivery] = [:]
    /// Chats heard of (chat -> newest sequence) that `chats` does not hold yet: a chat the user
    /// joined during the session, or news that came while the session was attaching.
    private var unseenChats: [UInt64: UInt64] = [:]
    private var attaching = false
    private var pumping = false
    /// Set by every push, cleared by a resend check that found nothing awaiting an
    /// acknowledgement: the session watchdog reads it without entering the actor, and skips
    /// the resend check of a device that has nothing out.
    private let pushesOut = Mutex(false)
    private let clock = ContinuousClock()

    private init(id: UInt64, userID: UInt64, context: Context) {
        self.id = id
        self.userID = userID
        self.context = context
    }

    public static func activate(id: UInt64, context: Context) async throws -> DeviceEntity {
        let device = try await context.storage.device(id: id)
        return DeviceEntity(id: id, userID: device.userID, context: context)
    }

    /// Makes `link` this device's session (closing an older one) and starts the replay after
    /// the device's cursors: a chat listed in `have` starts after the sequence stated there,
    /// any other chat after its stored delivery cursor.
    package func attach(_ link: SessionLink, have: [ChatCursor]) async throws {
        if let old = session, old !== link {
            old.close(code: 1001, reason: "replaced by a newer session of this device")
        }
        session = link
        chats = [:]
        attaching = true
        defer { if session === link { attaching = false } }

        var stated: [UInt64: UInt64] = [:]
        for cursor in have { stated[cursor.chatID] = max(stated[cursor.chatID] ?? 0, cursor.sequence) }
        let userChats = try await context.storage.chats(ofUser: userID)
        let cursors = try await context.storage.deliveryCursors(deviceID: id)
        guard session === link else { return }

        var fresh: [UInt64: ChatDelivery] = [:]
        for chat in userChats {
            let acked = cursors[chat.id] ?? 0
            let start = stated[chat.id].map { min($0, chat.lastSequence) } ?? acked
            let known = max(chat.lastSequence, unseenChats.removeValue(forKey: chat.id) ?? 0)
            fresh[chat.id] = ChatDelivery(acked: acked, sent: start, known: known)
        }
        chats = fresh
        attaching = false
        startPump()
    }

    /// Ends `link`'s hold on this device (a newer session may already have replaced it).
    package func detach(_ link: SessionLink) {
        guard session === link else { return }
        session = nil
        chats = [:]
        unseenChats = [:]
    }

    /// Newly stored messages of one chat, in sequence order, from the consumers. Pushed at once
    /// when they are next in line; otherwise left to the pump.
    public func notify(_ messages: [EncodedPush]) {
        guard let link = session, let chatID = messages.first?.chatID else { return }
        let newest = messages.map(\.sequence).max() ?? 0
        guard !attaching, var state = chats[chatID] else {
            unseenChats[chatID] = max(unseenChats[chatID] ?? 0, newest)
            startPump()
            return
        }
        state.known = max(state.known, newest)
        if !pumping {
            for message in messages where message.sequence == state.sent + 1 {
                guard state.unacked < context.maxUnackedPerChat, link.offer(encoded: message.frame) else { break }
                state.sent = message.sequence
                if state.waitingSince == nil { state.waitingSince = clock.now }
                context.metrics?.countPushes(1)
                pushesOut.withLock { $0 = true }
            }
        }
        chats[chatID] = state
        if state.sent < state.known { startPump() }
    }

    /// The device's acknowledgement; returns the cursors that advanced. A cursor of a chat that
    /// is not the user's is ignored; one past what the chat holds counts up to what it holds.
    package func acknowledge(_ cursors: [ChatCursor]) async throws -> [CursorAdvance] {
        var highest: [UInt64: UInt64] = [:]
        for cursor in cursors { highest[cursor.chatID] = max(highest[cursor.chatID] ?? 0, cursor.sequence) }
        var advanced: [CursorAdvance] = []
        for (chatID, sequence) in highest {
            guard let state = chats[chatID] else { continue }
            let upTo = min(sequence, max(state.known, state.sent))
            guard upTo > state.acked else { continue }
            try await context.storage.advanceDeliveryCursor(deviceID: id, chatID: chatID, to: upTo)
            // Another call may have run during the write: apply the advance to what is there now.
            guard var current = chats[chatID], upTo > current.acked else { continue }
            advanced.append(CursorAdvance(chatID: chatID, from: current.acked, to: upTo))
            current.acked = upTo
            current.sent = max(current.sent, upTo)
            current.waitingSince = current.unacked > 0 ? clock.now : nil
            chats[chatID] = current
        }
        if !advanced.isEmpty { startPump() }
        return advanced
    }

    /// Sends again what has waited for an acknowledgement past the timeout: the chat's `sent`
    /// goes back to its cursor and the pump pushes from there. Called by the session's
    /// watchdog; returns the number of chats rewound.
    @discardableResult
    package func resendUnacknowledged() -> Int {
        guard session != nil, !attaching else { return 0 }
        let now = clock.now
        var rewound = 0
        var awaiting = false
        for (chatID, state) in chats {
            awaiting = awaiting || state.unacked > 0
            guard let since = state.waitingSince, now - since >= context.ackTimeout, state.unacked > 0 else { continue }
            chats[chatID]?.sent = state.acked
            chats[chatID]?.waitingSince = nil
            rewound += 1
        }
        if rewound > 0 {
            context.metrics?.countResends(rewound)
            startPump()
        }
        if !awaiting { pushesOut.withLock { $0 = false } }
        return rewound
    }

    /// False only when a resend check found nothing awaiting an acknowledgement and nothing
    /// was pushed since: `resendUnacknowledged` would do nothing.
    package nonisolated var mayAwaitAcknowledgement: Bool { pushesOut.withLock { $0 } }

    /// A receipt for a message this device's user sent; dropped when no session is attached
    /// (receipts are not replayed; see DeliveryReceipt).
    func deliverReceipts(_ receipts: [DeliveryReceipt]) {
        guard let link = session else { return }
        for receipt in receipts { link.offer(.push(.delivered(receipt))) }
    }

    private func startPump() {
        guard !pumping, !attaching, session != nil, hasPushesDue else { return }
        pumping = true
        Task { await self.pump() }
    }

    /// Whether the pump has anything to do: a chat heard of but not set up, or one behind what
    /// it holds with room in its window. Most acknowledgements leave nothing behind, and a
    /// pump started for nothing would only make the next live push take the storage path.
    private var hasPushesDue: Bool {
        !unseenChats.isEmpty || chats.values.contains { $0.sent < $0.known && $0.unacked < context.maxUnackedPerChat }
    }

    /// Pushes from storage whatever is behind, chat by chat, within each chat's window and as
    /// the session's queue makes room. One pump at a time.
    private func pump() async {
        defer { pumping = false }
        var failures = 0
        while let link = session, !link.isClosed, !attaching {
            do {
                if let (chatID, newest) = unseenChats.first {
                    // A chat the user joined after the session attached: start at its cursor.
                    let acked = try await context.storage.deliveryCursor(deviceID: id, chatID: chatID)
                    guard session === link, !attaching else { continue }
                    unseenChats[chatID] = nil
                    let known = max(newest, unseenChats.removeValue(forKey: chatID) ?? 0)
                    if var state = chats[chatID] {
                        state.known = max(state.known, known)
                        chats[chatID] = state
                    } else {
                        chats[chatID] = ChatDelivery(acked: acked, sent: acked, known: known)
                    }
                    continue
                }
                guard let (chatID, state) = chats.first(where: { $0.value.sent < $0.value.known && $0.value.unacked < context.maxUnackedPerChat }) else { return }
                if link.roomBytes == 0 {
                    await link.waitForRoom()
                    continue
                }
                let limit = Int(min(context.maxUnackedPerChat - state.unacked, state.known - state.sent, 256))
                let page = try await context.storage.history(chatID: chatID, afterSequence: state.sent, limit: limit)
                failures = 0
                guard session === link, !attaching, var current = chats[chatID] else { continue }
                if page.isEmpty {
                    // Storage holds less than we were told: nothing more to push for now.
                    current.known = current.sent
                }
                var pushed = 0
                for message in page where message.sequence == current.sent + 1 {
                    guard link.offer(.push(.message(ChatMessage(message)))) else { break }
                    current.sent = message.sequence
                    if current.waitingSince == nil { current.waitingSince = clock.now }
                    pushed += 1
                }
                chats[chatID] = current
                context.metrics?.countPushes(pushed)
                if pushed > 0 { pushesOut.withLock { $0 = true } }
                if pushed == 0 && !page.isEmpty { await link.waitForRoom() }
            } catch {
                // Storage trouble: the session stays, the pump retries with backoff.
                failures += 1
                context.logger.warning("push replay failed", metadata: ["device": "\(id)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(min(100 << min(failures, 5), 2_000)))
            }
        }
    }
}

/// A stored message as its push frame, encoded once for every device it goes to.
public struct EncodedPush: Sendable {
    public var chatID: UInt64
    public var sequence: UInt64
    /// The encoded `ServerFrame` carrying the message.
    public var frame: [UInt8]

    public init(_ message: StoredMessage) {
        chatID = message.chatID
        sequence = message.sequence
        frame = ServerFrame.push(.message(ChatMessage(message))).serializedBytes()
    }
}

/// A device's delivery cursor in one chat moved from `from` to `to`.
package struct CursorAdvance: Sendable, Equatable {
    package var chatID: UInt64
    package var from: UInt64
    package var to: UInt64

    package init(chatID: UInt64, from: UInt64, to: UInt64) {
        self.chatID = chatID
        self.from = from
        self.to = to
    }
}
