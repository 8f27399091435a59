import Synchronization

/// `body`'s result, or `otherwise` when it has not come within `timeout`. `body` is never
/// cancelled, only no longer waited for: a commit on its way must finish or fail by itself,
/// and a query to a server cut off from the network neither answers nor heeds cancellation (a
/// task group would wait for it).
public func answer<Value: Sendable>(within timeout: Duration, otherwise: Value, _ body: @escaping @Sendable () async -> Value) async -> Value {
    let first = FirstAnswer<Value>()
    return await withCheckedContinuation { continuation in
        first.waiting(continuation)
        let timer = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { first.give(otherwise) }
        }
        Task {
            first.give(await body())
            timer.cancel()
        }
    }
}

/// Resumes one waiting continuation with the first answer given; later ones are dropped. For
/// a wait that several parties may end (the work, a timer, someone giving up on it).
public final class FirstAnswer<Value: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<Value, Never>?>(nil)

    public init() {}

    public func waiting(_ waiter: CheckedContinuation<Value, Never>) {
        continuation.withLock { $0 = waiter }
    }

    public func give(_ value: Value) {
        continuation.withLock { waiter -> CheckedContinuation<Value, Never>? in
            defer { waiter = nil }
            return waiter
        }?.resume(returning: value)
    }
}
