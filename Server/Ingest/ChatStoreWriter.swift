import CourierCore
import CourierProtocol
import Synchronization

/// Group commit for the consumers: the batches that every partition's consumer hands in while
/// one transaction runs all go into the next one, so the partitions share one transaction
/// instead of paying one each (their durability point, `makeDurable`, is shared more widely
/// still: see `ChatConsumers`). Each caller still waits for its
/// own batch and gets its own results.
///
/// With a `linger` (embedded storage, whose thread keeps the wait), a transaction also starts
/// no sooner than that after the previous one started: at a few hundred messages a second the
/// batches otherwise come one at a time, and each paid a whole transaction, a wake of the
/// store's thread and of the event loops its pushes go to. A batch after a quiet spell is not
/// held back; under load, when a transaction lasts longer than the linger, none waits.
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
        /// When the last transaction started, for the linger (kept only with one).
        var lastStart: ContinuousClock.Instant?
    }

    private let store: any ChatBatchStore
    private let state = Mutex(State())
    /// A transaction starts no sooner than this after the one before it started, so batches
    /// that come within it share one; zero for none. Only for a store with a thread of its own.
    private let linger: Duration
    private let thread: DedicatedThreadExecutor?

    package init(store: any ChatBatchStore, linger: Duration = .zero) {
        self.store = store
        thread = linger > .zero ? store.executor as? DedicatedThreadExecutor : nil
        self.linger = linger
    }

    /// Waits out the linger (on the store's thread, whose tasks, the other partitions'
    /// consumers, hand in their batches meanwhile), then notes the transaction's start.
    private func lingerThenStart() async {
        guard thread != nil else { return }
        await untilNextStart()
        state.withLock { $0.lastStart = .now }
    }

    /// Returns when the next transaction may start (at once without a linger, or when the
    /// last one started long enough ago). A consumer that reads its partition only then takes
    /// in what came meanwhile, rather than leaving it to wait behind its batch for the
    /// transaction after.
    package func untilNextStart() async {
        guard let thread, let last = state.withLock({ $0.lastStart }), last + linger > .now else { return }
        try? await thread.sleep(until: last + linger)
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
        await lingerThenStart()
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
        // On the store's thread (if it has one), where its transactions and linger run.
        if more { Task(executorPreference: store.executor) { await self.writeUntilEmpty() } }
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
            // Pending batches only grow while `writing` is set: none now, and this writer ends.
            guard state.withLock({ state in
                if state.pending.isEmpty { state.writing = false }
                return state.writing
            }) else { return }
            await lingerThenStart()
            let batches = state.withLock { state -> [(writes: [ChatWrite], waiter: Waiter)] in
                state.transactions += 1
                state.batches += state.pending.count
                defer { state.pending = [] }
                return state.pending
            }
            do {
                Self.answer(batches, with: try await store.storeBatch(batches.flatMap(\.writes))[...])
            } catch {
                for batch in batches { batch.waiter.resume(.failure(error)) }
            }
        }
    }
}
