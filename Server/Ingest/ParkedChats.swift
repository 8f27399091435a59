import CourierCore
import CourierLog
import CourierProtocol
import Synchronization

/// One partition's chats whose store failed, with the messages waiting behind each in log
/// order, their retry backoff, and the offset the partition may commit. The reader parks and
/// appends; the retrier takes a due chat, stores what it can and reports back.
///
/// Bounded: at most `limit` messages wait in all; `isFull` tells the reader to stop reading
/// (the log keeps what is not read).
final class ParkedChats: Sendable {
    struct Entry: Sendable {
        var offset: UInt64
        var message: AcceptedMessage
    }

    private struct Chat {
        var waiting: [Entry]
        var delay: Duration
        var due: ContinuousClock.Instant
        /// The retrier holds a snapshot of `waiting`; not due again until it reports.
        var inRetry = false
    }

    private struct State {
        var chats: [UInt64: Chat] = [:]
        var count = 0
        var progress: ContiguousProgress
        /// The retrier, waiting for a chat to be parked (it sleeps on no timer meanwhile).
        var retrierWaiting: CheckedContinuation<Void, Never>?
    }

    static let firstDelay: Duration = .milliseconds(10)
    let limit: Int
    private let state: Mutex<State>

    init(resumingAt offset: UInt64, limit: Int) {
        self.limit = limit
        state = Mutex(State(progress: ContiguousProgress(resumingAt: offset)))
    }

    /// Every record below this offset is stored, refused or skipped: the offset to commit.
    var committable: UInt64 { state.withLock { $0.progress.committable } }
    var isFull: Bool { state.withLock { $0.count >= limit } }

    func isParked(_ chatID: UInt64) -> Bool { state.withLock { $0.chats[chatID] != nil } }

    func markProcessed(_ offsets: [UInt64]) {
        state.withLock { state in
            for offset in offsets { state.progress.markProcessed(offset) }
        }
    }

    /// Queues `entries` behind the chat's parked messages if it is parked; false if it is not.
    func appendIfParked(_ chatID: UInt64, _ entries: [Entry]) -> Bool {
        state.withLock { state in
            guard state.chats[chatID] != nil else { return false }
            state.chats[chatID]!.waiting += entries
            state.count += entries.count
            return true
        }
    }

    /// Parks a chat whose store just failed, with its unstored messages in log order.
    func park(_ chatID: UInt64, _ entries: [Entry]) {
        let retrier = state.withLock { state in
            state.count += entries.count
            if state.chats[chatID] != nil {
                state.chats[chatID]!.waiting = entries + state.chats[chatID]!.waiting
            } else {
                state.chats[chatID] = Chat(waiting: entries, delay: Self.firstDelay, due: .now + Self.firstDelay)
            }
            defer { state.retrierWaiting = nil }
            return state.retrierWaiting
        }
        retrier?.resume()
    }

    /// Returns once a chat is parked (at once if one is), or when the task is cancelled.
    func waitUntilParked() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let waiting = state.withLock { state in
                    guard state.chats.isEmpty, !Task.isCancelled else { return false }
                    state.retrierWaiting = continuation
                    return true
                }
                if !waiting { continuation.resume() }
            }
        } onCancel: {
            let retrier = state.withLock { state in
                defer { state.retrierWaiting = nil }
                return state.retrierWaiting
            }
            retrier?.resume()
        }
    }

    /// A parked chat whose retry is due, with a snapshot of its waiting messages.
    func nextDue() -> (UInt64, [Entry])? {
        state.withLock { state in
            let now = ContinuousClock.now
            guard let (chatID, chat) = state.chats.filter({ !$0.value.inRetry && $0.value.due <= now }).min(by: { $0.value.due < $1.value.due }) else { return nil }
            state.chats[chatID]!.inRetry = true
            return (chatID, chat.waiting)
        }
    }

    /// How long until the earliest retry is due; nil when nothing is parked.
    var timeUntilNextDue: Duration? {
        state.withLock { state in
            state.chats.values.filter { !$0.inRetry }.map(\.due).min().map { max(.zero, $0 - .now) }
        }
    }

    /// The retrier stored the first `count` of the chat's snapshot; `failed` if it stopped at a
    /// failure. Returns the delay before the next try (zero once the chat is unparked).
    func stored(_ count: Int, of chatID: UInt64, failed: Bool, maxDelay: Duration) -> Duration {
        state.withLock { state in
            guard var chat = state.chats[chatID] else { return .zero }
            chat.waiting.removeFirst(count)
            state.count -= count
            chat.inRetry = false
            if failed {
                chat.delay = min(chat.delay * 2, maxDelay)
            } else if chat.waiting.isEmpty {
                state.chats[chatID] = nil
                return .zero
            } else {
                // Messages arrived during the retry: store them next, at once.
                chat.delay = Self.firstDelay
            }
            chat.due = .now + (failed ? chat.delay : .zero)
            state.chats[chatID] = chat
            return chat.delay
        }
    }
}
