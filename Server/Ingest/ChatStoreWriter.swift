import CourierCore
import CourierProtocol
import Synchronization

/// Group commit for the consumers: the batches that every partition's consumer hands in while
/// one transaction runs all go into the next one, so the partitions share one transaction and
/// one sync (one durability point) instead of paying one each. Each caller still waits for its
/// own batch and gets its own results.
///
/// Bounded by its callers: each partition's consumer and its retrier have at most one batch
/// here at a time, and a batch is at most one log read (`ChatConsumers.Configuration.batchBytes`).
package final class ChatStoreWriter: Sendable {
    private typealias Waiter = CheckedContinuation<Result<[ChatWriteResult], StorageError>, Never>

    private struct State {
        var pending: [(writes: [ChatWrite], waiter: Waiter)] = []
        var writing = false
        /// Transactions written and batches they carried: their ratio is the group-commit factor.
        var transactions = 0
        var batches = 0
    }

    private let store: any ChatBatchStore
    private let state = Mutex(State())

    init(store: any ChatBatchStore) {
        self.store = store
    }

    package var statistics: (transactions: Int, batches: Int) { state.withLock { ($0.transactions, $0.batches) } }

    /// Stores `writes` durably (see `ChatBatchStore.storeBatch`), together with whatever other
    /// partitions hand in meanwhile.
    func store(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
        let result = await withCheckedContinuation { (waiter: Waiter) in
            let startWriter = state.withLock { state in
                state.pending.append((writes, waiter))
                defer { state.writing = true }
                return !state.writing
            }
            // The writer lives only while batches wait; the next caller starts another.
            if startWriter { Task { await self.writeUntilEmpty() } }
        }
        return try result.get()
    }

    private func writeUntilEmpty() async {
        while true {
            let batches = state.withLock { state -> [(writes: [ChatWrite], waiter: Waiter)] in
                if state.pending.isEmpty {
                    state.writing = false
                } else {
                    state.transactions += 1
                    state.batches += state.pending.count
                }
                defer { state.pending = [] }
                return state.pending
            }
            guard !batches.isEmpty else { return }
            do {
                let results = try await store.storeBatch(batches.flatMap(\.writes))
                var start = 0
                for batch in batches {
                    batch.waiter.resume(returning: .success(Array(results[start..<start + batch.writes.count])))
                    start += batch.writes.count
                }
            } catch {
                for batch in batches { batch.waiter.resume(returning: .failure(error)) }
            }
        }
    }
}
