import GRDB
import Synchronization

/// Group commit for delivery cursors. Every push a device acknowledges moves a cursor, so a
/// busy server acknowledges thousands a second; one write transaction each would keep
/// SQLite's single writer busy with little else. Callers still wait for their own write: a
/// writer gathers advances for `gatherDelay` before its first transaction (at a few hundred
/// messages a second each acknowledgement would otherwise find the writer idle and pay a
/// transaction and a hand-over to SQLite's thread alone), and the advances that arrive while
/// one transaction runs all go into the next one.
final class CursorBatcher: Sendable {
    private struct Key: Hashable {
        var deviceID: UInt64
        var chatID: UInt64
    }

    private struct State {
        /// The highest sequence asked for per (device, chat), not yet written: bounded by the
        /// devices and their chats, since a key's later advances replace its earlier one.
        var pending: [Key: UInt64] = [:]
        var waiting: [CheckedContinuation<Void, any Error>] = []
        var writing = false
    }

    private let pool: DatabasePool
    private let gatherDelay: Duration
    private let state = Mutex(State())

    init(pool: DatabasePool, gatherDelay: Duration = .milliseconds(5)) {
        self.pool = pool
        self.gatherDelay = gatherDelay
    }

    func advance(deviceID: UInt64, chatID: UInt64, to sequence: UInt64) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let startWriter = state.withLock { state in
                let key = Key(deviceID: deviceID, chatID: chatID)
                state.pending[key] = max(state.pending[key] ?? 0, sequence)
                state.waiting.append(continuation)
                defer { state.writing = true }
                return !state.writing
            }
            // The writer task lives only while advances wait; the next caller starts another.
            if startWriter { Task { await self.writeUntilEmpty() } }
        }
    }

    /// Writes what is pending, batch after batch, until nothing is; then the next caller
    /// starts a writer again.
    private func writeUntilEmpty() async {
        try? await Task.sleep(for: gatherDelay)
        while true {
            let batch: (advances: [(Key, UInt64)], waiting: [CheckedContinuation<Void, any Error>])? = state.withLock { state in
                guard !state.pending.isEmpty else {
                    state.writing = false
                    return nil
                }
                defer {
                    state.pending = [:]
                    state.waiting = []
                }
                return (Array(state.pending), state.waiting)
            }
            guard let batch else { return }
            do {
                try await pool.write { db in
                    // Never backwards: a slower write of an older cursor cannot undo a newer one.
                    let statement = try db.cachedStatement(sql: """
                        INSERT INTO delivery_cursors (device_id, chat_id, sequence) VALUES (?, ?, ?)
                        ON CONFLICT (device_id, chat_id) DO UPDATE SET sequence = excluded.sequence WHERE excluded.sequence > delivery_cursors.sequence
                        """)
                    for (key, sequence) in batch.advances {
                        try statement.execute(arguments: [Int64(clamping: key.deviceID), Int64(clamping: key.chatID), Int64(clamping: sequence)])
                    }
                }
                for continuation in batch.waiting { continuation.resume() }
            } catch {
                for continuation in batch.waiting { continuation.resume(throwing: error) }
            }
        }
    }
}
