import Foundation

/// A task executor with one thread of its own, for work that blocks (a synchronous SQLite
/// transaction): a task that prefers it (`withTaskExecutorPreference`) runs here, and code on
/// this thread may block without holding up an event loop. Work that already runs here calls
/// such code without a hop; from anywhere else it is one hop there and one back, as a dispatch
/// queue would be.
///
/// The queue of jobs holds one job per task that is ready to run here, so it is bounded by the
/// tasks that prefer this executor: for the SQLite threads a fixed set (the log's consumers,
/// the storage calls in flight, the delivery cursor writer, the offset committer); for the ops
/// listener's (`OpsHTTPService`) one task per open ops connection, of which the listener
/// holds about `OpsHTTPService.defaultMaxConnections`. The thread ends once the executor is
/// gone: it holds no reference to it. Whoever sends jobs here holds one: a
/// `withTaskExecutorPreference` scope, or the owner of a `Task(executorPreference:)` that
/// runs or sleeps here.
public final class DedicatedThreadExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: the thread and the executor share `queue`, which `NSCondition` guards.
    private struct Sleeper {
        let id: UInt64
        let deadline: ContinuousClock.Instant
        let continuation: CheckedContinuation<Bool, Never>
    }

    private final class Queue: @unchecked Sendable {
        let condition = NSCondition()
        var jobs: [UnownedJob] = []
        /// Tasks sleeping on this thread (`sleep(until:)`), soonest last; a continuation
        /// resumes with true when its deadline came, false when its task was cancelled.
        var sleepers: [Sleeper] = []
        var lastSleeperID: UInt64 = 0
        var closed = false
    }

    private let queue = Queue()

    /// Starts the thread, named `name` (at most 15 bytes are kept: Linux's limit).
    public init(name: String) {
        let queue = self.queue
        let executor = asUnownedTaskExecutor()
        let thread = Thread {
            // The kernel's name for the thread (what /proc and perf show).
            try? String(name.prefix(15)).write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8)
            Self.run(queue, as: executor)
        }
        thread.name = name
        thread.start()
    }

    deinit {
        queue.condition.lock()
        queue.closed = true
        queue.condition.signal()
        queue.condition.unlock()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.condition.lock()
        queue.jobs.append(job)
        queue.condition.signal()
        queue.condition.unlock()
    }

    /// Suspends the calling task until `deadline`, kept by this thread's own wait: no timer
    /// thread is woken for it, and the task goes on here. Throws once the task is cancelled, at
    /// once. Bounded like the jobs: one entry per sleeping task, and the tasks that sleep here
    /// are the fixed set the type's comment lists.
    public func sleep(until deadline: ContinuousClock.Instant) async throws(CancellationError) {
        let id = queue.condition.withLock {
            queue.lastSleeperID += 1
            return queue.lastSleeperID
        }
        let cameDue = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                queue.condition.lock()
                // Under the lock: a cancellation either came before this (the flag is set before
                // the handler runs) or finds the entry below.
                guard !Task.isCancelled else {
                    queue.condition.unlock()
                    continuation.resume(returning: false)
                    return
                }
                let index = queue.sleepers.firstIndex { $0.deadline < deadline } ?? queue.sleepers.endIndex
                queue.sleepers.insert(Sleeper(id: id, deadline: deadline, continuation: continuation), at: index)
                queue.condition.signal()
                queue.condition.unlock()
            }
        } onCancel: {
            // The thread's wait for it ends in its own time; it then finds nothing due.
            let cancelled = queue.condition.withLock { () -> Sleeper? in
                guard let index = queue.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return queue.sleepers.remove(at: index)
            }
            cancelled?.continuation.resume(returning: false)
        }
        if !cameDue { throw CancellationError() }
    }

    /// Tasks sleeping here now: what an idle server keeps waking this thread for.
    package var sleeperCount: Int { queue.condition.withLock { queue.sleepers.count } }

    /// Sleeps on `executor`'s own timer when it is a dedicated thread (the task goes on there,
    /// with no wake-up of dispatch's timer thread and a worker), else with `Task.sleep`.
    public static func sleep(for duration: Duration, on executor: (any TaskExecutor)?) async throws(CancellationError) {
        if let thread = executor as? DedicatedThreadExecutor {
            try await thread.sleep(until: .now + duration)
        } else {
            do { try await Task.sleep(for: duration) } catch { throw CancellationError() }
        }
    }

    /// Runs jobs in the order they came, taking every ready job in one lock; between jobs it
    /// waits until the soonest sleeper is due, and wakes what is due (the sleepers' tasks come
    /// back here as jobs).
    private static func run(_ queue: Queue, as executor: UnownedTaskExecutor) {
        var batch: [UnownedJob] = []
        var due: [CheckedContinuation<Bool, Never>] = []
        while true {
            queue.condition.lock()
            while queue.jobs.isEmpty && !queue.closed {
                guard let soonest = queue.sleepers.last?.deadline else {
                    queue.condition.wait()
                    continue
                }
                let now = ContinuousClock.now
                if soonest <= now { break }
                // The condition's deadline is on the wall clock, which may be stepped back: a
                // wait of at most 50 ms is checked again against the monotonic clock.
                _ = queue.condition.wait(until: Date(timeIntervalSinceNow: min(soonest - now, .milliseconds(50)) / .seconds(1)))
            }
            let now = ContinuousClock.now
            while let last = queue.sleepers.last, last.deadline <= now || queue.closed { due.append(queue.sleepers.removeLast().continuation) }
            if queue.jobs.isEmpty && due.isEmpty && queue.closed {
                queue.condition.unlock()
                return
            }
            swap(&batch, &queue.jobs)
            queue.condition.unlock()
            for continuation in due { continuation.resume(returning: true) }
            due.removeAll(keepingCapacity: true)
            for job in batch { job.runSynchronously(on: executor) }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
