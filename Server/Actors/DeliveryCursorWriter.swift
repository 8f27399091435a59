import CourierCore
import Logging
import Synchronization

/// Stores the delivery cursors that acknowledgements advance, in batches, then hands the
/// advances to the delivery receipts. An acknowledgement is taken on the session's event loop
/// without waiting for storage (the Device's window moves at once); every push a device
/// acknowledges moves a cursor, so a busy server has thousands a second, and one write
/// transaction each would keep SQLite's single writer busy with little else.
///
/// The writer gathers for `gatherDelay` before each transaction, so the transactions are at most
/// one per `gatherDelay` however many acknowledgements come (without it, each would find the
/// writer idle, or the few that came during the last transaction, and pay a transaction for
/// that). 25 ms: each round is a timer and a transaction, whose thread wake-ups at 10 ms were
/// most of a wake-up per message at 500 msgs/s; a sender's delivery receipt comes at most that
/// much later. A failed write is kept and tried again with backoff. Should the server stop first, the stored cursors are behind
/// what was acknowledged, and the devices are sent those messages again when they reconnect
/// (at least once; a cursor never moves without an acknowledgement).
///
/// With a `thread` (the embedded store's writer thread), the writer runs there: it waits out
/// `gatherDelay` in that thread's own timer and writes without a hop. `Task.sleep` goes through
/// dispatch's timer thread and a dispatch worker before the task is back on an event loop
/// (three thread wake-ups per round), and the write then hopped to the store's thread and back.
///
/// Bounded by the devices and their chats: a (device, chat) pair holds one pending advance,
/// which later acknowledgements widen.
package final class DeliveryCursorWriter: Sendable {
    private struct Key: Hashable {
        var deviceID: UInt64
        var chatID: UInt64
    }

    private struct Acknowledger: Hashable {
        var deviceID: UInt64
        var userID: UInt64
    }

    private struct Pending {
        var userID: UInt64
        var from: UInt64
        var to: UInt64

        mutating func widen(_ other: Pending) {
            from = min(from, other.from)
            to = max(to, other.to)
        }
    }

    private struct State {
        var pending: [Key: Pending] = [:]
        var writing = false
    }

    private let storage: any DeliveryCursorStore
    private let receipts: DeliveryReceipts?
    private let gatherDelay: Duration
    private let thread: DedicatedThreadExecutor?
    private let logger: Logger
    private let state = Mutex(State())

    package init(
        storage: any DeliveryCursorStore, receipts: DeliveryReceipts?, gatherDelay: Duration = .milliseconds(25), thread: DedicatedThreadExecutor? = nil,
        logger: Logger
    ) {
        self.storage = storage
        self.receipts = receipts
        self.gatherDelay = gatherDelay
        self.thread = thread
        self.logger = logger
    }

    /// Records what one acknowledgement of `deviceID` advanced; returns at once.
    package func record(_ advances: [CursorAdvance], userID: UInt64, deviceID: UInt64) {
        guard !advances.isEmpty else { return }
        let startWriter = state.withLock { state -> Bool in
            for advance in advances {
                let key = Key(deviceID: deviceID, chatID: advance.chatID)
                let pending = Pending(userID: userID, from: advance.from, to: advance.to)
                state.pending[key, default: pending].widen(pending)
            }
            defer { state.writing = true }
            return !state.writing
        }
        // The writer task lives only while advances wait; the next record starts another.
        if startWriter { Task(executorPreference: thread) { await self.writeUntilEmpty() } }
    }

    /// Advances recorded and not yet stored.
    package var pendingCount: Int { state.withLock { $0.pending.count } }

    /// Returns once everything recorded so far is stored, or after `timeout` (storage failing):
    /// a graceful stop stores what the last acknowledgements moved.
    package func drain(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while state.withLock({ $0.writing }) && ContinuousClock.now < deadline {
            do { try await Task.sleep(for: .milliseconds(10)) } catch { return }
        }
    }

    private func writeUntilEmpty() async {
        var failures = 0
        var receiptsRound: Task<Void, Never>?
        while true {
            await pause(gatherDelay)
            // The last round's receipts first: receipts keep their order, at most one round is
            // out, and `drain` returns only once they are done.
            await receiptsRound?.value
            let batch: [Key: Pending]? = state.withLock { state in
                guard !state.pending.isEmpty else {
                    state.writing = false
                    return nil
                }
                defer { state.pending = [:] }
                return state.pending
            }
            guard let batch else { return }
            do {
                try await storage.advanceDeliveryCursors(batch.map { DeliveryCursor(deviceID: $0.key.deviceID, chatID: $0.key.chatID, sequence: $0.value.to) })
                failures = 0
            } catch {
                failures += 1
                logger.warning("delivery cursors not stored; trying again", metadata: ["cursors": "\(batch.count)", "error": "\(error)"])
                state.withLock { state in
                    for (key, pending) in batch { state.pending[key, default: pending].widen(pending) }
                }
                await pause(.milliseconds(min(100 << min(failures, 5), 2_000)))
                continue
            }
            guard let receipts else { continue }
            var byDevice: [Acknowledger: [CursorAdvance]] = [:]
            for (key, pending) in batch {
                byDevice[Acknowledger(deviceID: key.deviceID, userID: pending.userID), default: []].append(CursorAdvance(chatID: key.chatID, from: pending.from, to: pending.to))
            }
            // In a task of their own, which does not inherit the writer's thread: called from
            // there, a Chat actor would run on SQLite's writer thread (a default actor runs on
            // its caller's preferred executor), with its chat loads and history reads, and
            // drain other callers' jobs there too. (`withTaskExecutorPreference` of the global
            // concurrent executor went through dispatch's queue instead of the event loops.)
            receiptsRound = Task {
                for (device, advances) in byDevice {
                    await receipts.acknowledged(advances, userID: device.userID, deviceID: device.deviceID)
                }
            }
        }
    }

    /// Waits on the writer's thread's timer when it has one (see the type's comment).
    private func pause(_ duration: Duration) async {
        try? await DedicatedThreadExecutor.sleep(for: duration, on: thread)
    }
}
