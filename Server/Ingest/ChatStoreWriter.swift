import CourierCore
import CourierProtocol
import Synchronization

/// Group commit for the consumers: the batches that every partition's consumer hands in while
/// one transaction runs all go into the next one, so the partitions share one transaction
/// instead of paying one each (their durability point, `makeDurable`, is shared more widely
/// still: see `ChatConsumers`). Each caller still waits for its
/// own batch and gets its own results.
///
/// Bounded by its callers: each partition's consumer and its retrier have at most one batch
/// here at a time, and a batch is at most one log read (`ChatConsumers.Configuration.batchBytes`).
package final class ChatStoreWriter: ChatBatchStore {
    /// What a waiting caller hears: write the next transaction yourself, or how yours went.
    private enum Turn: Sendable {
        case lead
        case done(Result<[ChatWriteResult], StorageError>)
    }

    /// A caller waiting for a transaction that another caller or the writer task carries.
    private struct Waiter: Sendable {
        let continuation: CheckedContinuation<Turn, Never>

        init(_ continuation: CheckedContinuation<Turn, Never>) {
            self.continuation = continuation
        }

        func resume(_ result: Result<[ChatWriteResult], StorageError>) {
            continuation.resume(returning: .done(result))
        }
    }

    private struct State {
        var pending: [(writes: [ChatWrite], waiter: Waiter)] = []
        var writing = false
        /// Transactions written and batches they carried: their ratio is the group-commit factor.
        var transactions = 0
        var batches = 0
    }

    private let store: any ChatBatchStore
    private let state = Mutex(State())

    package init(store: any ChatBatchStore) {
        self.store = store
    }

    package var statistics: (transactions: Int, batches: Int) { state.withLock { ($0.transactions, $0.batches) } }

    /// Stores `writes` (see `ChatBatchStore.storeBatch`), together with whatever other
    /// partitions hand in meanwhile. A caller that finds no transaction running writes its own
    /// (with what is pending) on its own task; one that finds one running waits for the next,
    /// which a writer task started for them carries.
    func store(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
        let turn = await withCheckedContinuation { (waiter: CheckedContinuation<Turn, Never>) in
            let lead = state.withLock { state -> Bool in
                guard state.writing else {
                    state.writing = true
                    return true
                }
                state.pending.append((writes, Waiter(waiter)))
                return false
            }
            if lead { waiter.resume(returning: .lead) }
        }
        if case .done(let result) = turn { return try result.get() }
        // On the store's own thread the partitions' consumers take turns, and none could hand
        // in a batch while this one's transaction runs there: a yield lets the consumers that
        // are ready join this transaction first. A store without a thread of its own (a
        // cluster's, called from the gateway) needs none: its callers come concurrently.
        if store.executor != nil { await Task.yield() }
        // Our own transaction: this batch first, then whatever waits now.
        let others = state.withLock { state -> [(writes: [ChatWrite], waiter: Waiter)] in
            defer { state.pending = [] }
            state.transactions += 1
            state.batches += 1 + state.pending.count
            return state.pending
        }
        let result: Result<[ChatWriteResult], StorageError>
        do {
            let results = try await store.storeBatch(writes + others.flatMap(\.writes))
            result = .success(Array(results[..<writes.count]))
            Self.answer(others, with: results[writes.count...])
        } catch {
            result = .failure(error)
            for batch in others { batch.waiter.resume(.failure(error)) }
        }
        // What came meanwhile goes in a writer task, so this caller goes on with its batch.
        let more = state.withLock { state -> Bool in
            state.writing = !state.pending.isEmpty
            return state.writing
        }
        if more { Task { await self.writeUntilEmpty() } }
        return try result.get()
    }

    /// The writer as a store of its own: what a cluster node's intake commits through.
    package func storeBatch(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
        try await store(writes)
    }

    package func makeDurable() async throws(StorageError) {
        try await store.makeDurable()
    }

    package var executor: (any TaskExecutor)? { store.executor }

    private static func answer(_ batches: [(writes: [ChatWrite], waiter: Waiter)], with results: ArraySlice<ChatWriteResult>) {
        var start = results.startIndex
        for batch in batches {
            batch.waiter.resume(.success(Array(results[start..<start + batch.writes.count])))
            start += batch.writes.count
        }
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
                Self.answer(batches, with: try await store.storeBatch(batches.flatMap(\.writes))[...])
            } catch {
                for batch in batches { batch.waiter.resume(.failure(error)) }
            }
        }
    }
}
