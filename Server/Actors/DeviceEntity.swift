import CourierCore
import CourierProtocol
import Foundation
import Logging
import Synchronization

/// One device and its push session. While a session is attached, the device receives every
/// message of its user's chats, per chat in sequence order with no gap: what follows its
/// starting cursor is replayed from storage, then new messages are pushed as the consumers
/// store them. The delivery cursor advances only when the device acknowledges; pushes left
/// unacknowledged past the acknowledgement timeout are sent again. The device's own messages
/// come back to it too (it learns their sequence so) but wait for no acknowledgement of their
/// own: the next one covers them, and half of a two-person chat's acknowledgements were those.
///
/// One rule makes the seam between replay and live pushes exact: `sent` is the only position
/// per chat, and a message goes out only when its sequence is `sent + 1`. A live message that
/// cannot go out at once (a replay is running, the window or the session's queue is full)
/// only raises `known`, and the pump fetches it from storage in its turn.
public final class DeviceEntity: ShardedEntity {
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
        /// Acknowledged by the device through here (the stored cursor follows it; see
        /// `DeliveryCursorWriter`).
        var acked: UInt64
        /// The window's base: acknowledged, held by the device's own word (its `Hello.have`),
        /// or passed as this device's own messages. The device learns its message's sequence
        /// from the push of it but does not acknowledge it (its next acknowledgement covers
        /// it), so an own message next after this settles as it goes out, and one behind
        /// unacknowledged pushes waits in `ownAhead`.
        var settled: UInt64
        /// Pushed (in this session) through here; never behind what the device said it holds.
        var sent: UInt64
        /// The chat is known to hold messages through here.
        var known: UInt64
        /// Since when pushes have waited for an acknowledgement without progress.
        var waitingSince: ContinuousClock.Instant?
        /// This device's own messages pushed past `settled + 1`, ascending: they settle once
        /// everything before them is acknowledged. Within the window, so at most its size.
        var ownAhead: [UInt64] = []

        init(acked: UInt64, sent: UInt64, known: UInt64) {
            self.acked = acked
            settled = max(acked, sent)
            self.sent = sent
            self.known = known
        }

        var unacked: UInt64 { sent > settled ? sent - settled : 0 }

        /// `sequence` (the next) went out; `own` when this device sent it.
        mutating func pushed(_ sequence: UInt64, own: Bool, at now: ContinuousClock.Instant) {
            sent = sequence
            if own {
                // One at or below `settled` (a replay from behind the stored cursor) holds nothing.
                if sequence == settled + 1 { settled = sequence } else if sequence > settled + 1 { ownAhead.append(sequence) }
            }
            if unacked > 0, waitingSince == nil { waitingSince = now }
        }

        /// The device acknowledged through `sequence` (past `acked`).
        mutating func acknowledged(through sequence: UInt64, at now: ContinuousClock.Instant) {
            acked = sequence
            settled = max(settled, sequence)
            sent = max(sent, sequence)
            var passed = 0
            for own in ownAhead {
                guard own <= settled + 1 else { break }
                settled = max(settled, own)
                passed += 1
            }
            ownAhead.removeFirst(passed)
            waitingSince = unacked > 0 ? now : nil
        }

        /// Everything past the window's base goes out again (an acknowledged push, or an own
        /// message that settled, is never sent again in a session).
        mutating func rewind() {
            sent = settled
            ownAhead = []
            waitingSince = nil
        }
    }

    /// Everything that changes, behind one lock: a push, an acknowledgement and a resend check
    /// are each a few dictionary operations, done on the caller's thread (a consumer, an event
    /// loop) instead of a hop onto an actor's executor and back. Only the pump waits (on
    /// storage), and it holds no lock while it does.
    private struct State {
        var session: SessionLink?
        /// Per chat of the user, while a session is attached. Bounded by the user's chats.
        var chats: [UInt64: ChatDelivery] = [:]
        /// Chats heard of (chat -> newest sequence) that `chats` does not hold yet: a chat the
        /// user joined during the session, or news that came while the session was attaching.
        var unseenChats: [UInt64: UInt64] = [:]
        var attaching = false
        var pumping = false
        /// Set by every push, cleared by a resend check that found nothing awaiting an
        /// acknowledgement: the session watchdog skips the resend check of a device that has
        /// nothing out.
        var pushesOut = false

        /// Claims the pump when it has something to do and is not running; the caller starts it.
        mutating func claimPump(window: UInt64) -> Bool {
            guard !pumping, !attaching, session != nil, hasPushesDue(window: window) else { return false }
            pumping = true
            return true
        }

        /// Whether the pump has anything to do: a chat heard of but not set up, or one behind
        /// what it holds with room in its window. Most acknowledgements leave nothing behind,
        /// and a pump started for nothing would only make the next live push take the storage path.
        func hasPushesDue(window: UInt64) -> Bool {
            !unseenChats.isEmpty || chats.values.contains { $0.sent < $0.known && $0.unacked < window }
        }
    }

    public let id: UInt64
    public let userID: UInt64
    private let context: Context
    private let state = Mutex(State())
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
        let replaced: SessionLink? = state.withLock { state in
            let old = state.session
            state.session = link
            state.chats = [:]
            state.attaching = true
            return old === link ? nil : old
        }
        replaced?.close(code: 1001, reason: "replaced by a newer session of this device")

        var stated: [UInt64: UInt64] = [:]
        for cursor in have { stated[cursor.chatID] = max(stated[cursor.chatID] ?? 0, cursor.sequence) }
        let userChats: [Chat]
        let cursors: [UInt64: UInt64]
        do {
            userChats = try await context.storage.chats(ofUser: userID)
            cursors = try await context.storage.deliveryCursors(deviceID: id)
        } catch {
            state.withLock { state in if state.session === link { state.attaching = false } }
            throw error
        }
        let window = context.maxUnackedPerChat
        let startPump = state.withLock { state -> Bool in
            // A newer session took over meanwhile: its own attach sets the device up.
            guard state.session === link else { return false }
            var fresh: [UInt64: ChatDelivery] = [:]
            for chat in userChats {
                let acked = cursors[chat.id] ?? 0
                let start = stated[chat.id].map { min($0, chat.lastSequence) } ?? acked
                let known = max(chat.lastSequence, state.unseenChats.removeValue(forKey: chat.id) ?? 0)
                fresh[chat.id] = ChatDelivery(acked: acked, sent: start, known: known)
            }
            state.chats = fresh
            state.attaching = false
            return state.claimPump(window: window)
        }
        if startPump { launchPump() }
    }

    /// Ends `link`'s hold on this device (a newer session may already have replaced it).
    package func detach(_ link: SessionLink) {
        state.withLock { state in
            guard state.session === link else { return }
            state.session = nil
            state.chats = [:]
            state.unseenChats = [:]
        }
    }

    /// Closes the device's session, if it has one (a newer one took over on another node).
    package func closeSession(code: UInt16, reason: String) {
        state.withLock { $0.session }?.close(code: code, reason: reason)
    }

    /// Newly stored messages of one chat, in sequence order, from the consumers. Pushed at once
    /// when they are next in line; otherwise left to the pump.
    public func notify(_ messages: [EncodedPush]) {
        guard let chatID = messages.first?.chatID else { return }
        advance(chatID: chatID, through: messages.map(\.sequence).max() ?? 0, pushing: messages)
    }

    /// Another node of a cluster stored messages of a chat, through `sequence`, and sent some of
    /// them along (`messages`, in order, possibly none): those go out at once when next in line;
    /// the pump reads the rest from storage in its turn.
    public func heard(chatID: UInt64, through sequence: UInt64, messages: [EncodedPush] = []) {
        advance(chatID: chatID, through: sequence, pushing: messages)
    }

    /// The chat is known through `newest`; `messages` (in order, possibly none) go out at once
    /// when next in line, and the pump fetches whatever else is behind.
    private func advance(chatID: UInt64, through newest: UInt64, pushing messages: [EncodedPush]) {
        let window = context.maxUnackedPerChat
        let now = clock.now
        let (pushed, startPump) = state.withLock { state -> (Int, Bool) in
            guard let link = state.session else { return (0, false) }
            guard !state.attaching, var chat = state.chats[chatID] else {
                state.unseenChats[chatID] = max(state.unseenChats[chatID] ?? 0, newest)
                return (0, state.claimPump(window: window))
            }
            chat.known = max(chat.known, newest)
            var pushed = 0
            if !state.pumping {
                for message in messages where message.sequence == chat.sent + 1 {
                    guard chat.unacked < window, link.offer(encoded: message.frame) else { break }
                    chat.pushed(message.sequence, own: message.senderDeviceID == id, at: now)
                    pushed += 1
                }
            }
            if pushed > 0 { state.pushesOut = true }
            state.chats[chatID] = chat
            return (pushed, chat.sent < chat.known && state.claimPump(window: window))
        }
        if pushed > 0 { context.metrics?.countPushes(pushed) }
        if startPump { launchPump() }
    }

    /// The device's acknowledgement; returns the cursors that advanced, for the caller to
    /// store (`DeliveryCursorWriter`). A cursor of a chat that is not the user's is ignored;
    /// one past what the chat holds counts up to what it holds. The window moves at once: an
    /// acknowledged push is never sent again in this session, and should the stored cursor be
    /// lost with the server, the device is sent it again after it reconnects (at least once).
    package func acknowledge(_ cursors: [ChatCursor]) -> [CursorAdvance] {
        var highest: [UInt64: UInt64] = [:]
        for cursor in cursors { highest[cursor.chatID] = max(highest[cursor.chatID] ?? 0, cursor.sequence) }
        let window = context.maxUnackedPerChat
        let now = clock.now
        let (advanced, startPump) = state.withLock { state -> ([CursorAdvance], Bool) in
            var advanced: [CursorAdvance] = []
            for (chatID, sequence) in highest {
                guard var chat = state.chats[chatID] else { continue }
                let upTo = min(sequence, max(chat.known, chat.sent))
                guard upTo > chat.acked else { continue }
                advanced.append(CursorAdvance(chatID: chatID, from: chat.acked, to: upTo))
                chat.acknowledged(through: upTo, at: now)
                state.chats[chatID] = chat
            }
            return (advanced, !advanced.isEmpty && state.claimPump(window: window))
        }
        if startPump { launchPump() }
        return advanced
    }

    /// Sends again what has waited for an acknowledgement past the timeout: the chat's `sent`
    /// goes back to the window's base (`ChatDelivery.settled`) and the pump pushes from there. Called by the session's
    /// watchdog; returns the number of chats rewound.
    @discardableResult
    package func resendUnacknowledged() -> Int {
        let now = clock.now
        let window = context.maxUnackedPerChat
        let (rewound, startPump) = state.withLock { state -> (Int, Bool) in
            guard state.session != nil, !state.attaching else { return (0, false) }
            var rewound = 0
            var awaiting = false
            for (chatID, chat) in state.chats {
                awaiting = awaiting || chat.unacked > 0
                guard let since = chat.waitingSince, now - since >= context.ackTimeout, chat.unacked > 0 else { continue }
                state.chats[chatID]?.rewind()
                rewound += 1
            }
            if !awaiting { state.pushesOut = false }
            return (rewound, rewound > 0 && state.claimPump(window: window))
        }
        if rewound > 0 { context.metrics?.countResends(rewound) }
        if startPump { launchPump() }
        return rewound
    }

    /// False only when a resend check found nothing awaiting an acknowledgement and nothing
    /// was pushed since: `resendUnacknowledged` would do nothing.
    package var mayAwaitAcknowledgement: Bool { state.withLock { $0.pushesOut } }

    /// A receipt for a message this device's user sent; dropped when no session is attached
    /// (receipts are not replayed; see DeliveryReceipt).
    func deliverReceipts(_ receipts: [DeliveryReceipt]) {
        guard let link = state.withLock({ $0.session }) else { return }
        for receipt in receipts { link.offer(.push(.delivered(receipt))) }
    }

    /// Presence of users who share a chat with this device's user; dropped when no session is
    /// attached (a session that connects asks for the members instead).
    func deliverPresence(_ presence: Presence) {
        guard let link = state.withLock({ $0.session }) else { return }
        link.offer(.push(.presence(presence)))
    }

    private func launchPump() {
        Task { await self.pump() }
    }

    /// What the pump does next, decided under the lock.
    private enum PumpStep {
        case stop
        /// A chat heard of but not set up: start it at its stored cursor.
        case setUp(chatID: UInt64, newest: UInt64, SessionLink)
        case waitForRoom(SessionLink)
        case page(chatID: UInt64, after: UInt64, limit: Int, SessionLink)
    }

    /// Pushes from storage whatever is behind, chat by chat, within each chat's window and as
    /// the session's queue makes room. One pump at a time (`State.pumping`), which it gives
    /// up in the same lock section that finds nothing more to do.
    private func pump() async {
        var failures = 0
        let window = context.maxUnackedPerChat
        while true {
            let step = state.withLock { state -> PumpStep in
                guard let link = state.session, !link.isClosed, !state.attaching else {
                    state.pumping = false
                    return .stop
                }
                if let (chatID, newest) = state.unseenChats.first { return .setUp(chatID: chatID, newest: newest, link) }
                guard let (chatID, chat) = state.chats.first(where: { $0.value.sent < $0.value.known && $0.value.unacked < window }) else {
                    state.pumping = false
                    return .stop
                }
                if link.roomBytes == 0 { return .waitForRoom(link) }
                let limit = Int(min(window - chat.unacked, chat.known - chat.sent, 256))
                return .page(chatID: chatID, after: chat.sent, limit: limit, link)
            }
            do {
                switch step {
                case .stop:
                    return
                case .waitForRoom(let link):
                    await link.waitForRoom()
                case .setUp(let chatID, let newest, let link):
                    // A chat the user joined after the session attached: start at its cursor.
                    let acked = try await context.storage.deliveryCursor(deviceID: id, chatID: chatID)
                    state.withLock { state in
                        guard state.session === link, !state.attaching else { return }
                        let known = max(newest, state.unseenChats.removeValue(forKey: chatID) ?? 0)
                        if var chat = state.chats[chatID] {
                            chat.known = max(chat.known, known)
                            state.chats[chatID] = chat
                        } else {
                            state.chats[chatID] = ChatDelivery(acked: acked, sent: acked, known: known)
                        }
                    }
                case .page(let chatID, let after, let limit, let link):
                    let page = try await context.storage.history(chatID: chatID, afterSequence: after, limit: limit).map(EncodedPush.init)
                    failures = 0
                    let now = clock.now
                    let pushed = state.withLock { state -> Int in
                        guard state.session === link, !state.attaching, var chat = state.chats[chatID] else { return 0 }
                        // Storage holds less than we were told: nothing more to push for now.
                        if page.isEmpty { chat.known = chat.sent }
                        var pushed = 0
                        for message in page where message.sequence == chat.sent + 1 {
                            guard link.offer(encoded: message.frame) else { break }
                            chat.pushed(message.sequence, own: message.senderDeviceID == id, at: now)
                            pushed += 1
                        }
                        state.chats[chatID] = chat
                        if pushed > 0 { state.pushesOut = true }
                        return pushed
                    }
                    context.metrics?.countPushes(pushed)
                    if pushed == 0 && !page.isEmpty { await link.waitForRoom() }
                }
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
    /// The device that sent the message: its own push needs no acknowledgement.
    public var senderDeviceID: UInt64
    /// The encoded `ServerFrame` carrying the message.
    public var frame: [UInt8]

    public init(_ message: StoredMessage) {
        chatID = message.chatID
        sequence = message.sequence
        senderDeviceID = message.senderDeviceID
        frame = ServerFrame.push(.message(ChatMessage(message))).serializedBytes()
    }

    /// A frame encoded elsewhere (another node of a cluster).
    public init(chatID: UInt64, sequence: UInt64, senderDeviceID: UInt64, frame: [UInt8]) {
        self.chatID = chatID
        self.sequence = sequence
        self.senderDeviceID = senderDeviceID
        self.frame = frame
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
