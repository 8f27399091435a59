import Foundation
import NIOConcurrencyHelpers

/// Cuts waits short: a sender backing off after failures sleeps through `sleep(for:)`, and
/// `ring()` (for example when the push session reconnects, so the server is back) wakes every
/// sleeper at once instead of letting it wait out a long backoff.
public final class Nudge: Sendable {
    private let waiters = NIOLockedValueBox<[UUID: CheckedContinuation<Void, Never>]>([:])

    public init() {}

    public func ring() {
        let woken = waiters.withLockedValue { waiters in
            defer { waiters = [:] }
            return Array(waiters.values)
        }
        for waiter in woken { waiter.resume() }
    }

    /// Sleeps for `duration` or until rung, whichever comes first; throws if cancelled.
    public func sleep(for duration: Duration) async throws {
        let id = UUID()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: duration) }
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let cancelled = self.waiters.withLockedValue { waiters -> Bool in
                            if Task.isCancelled { return true }
                            waiters[id] = continuation
                            return false
                        }
                        if cancelled { continuation.resume() }
                    }
                } onCancel: {
                    self.waiters.withLockedValue { $0.removeValue(forKey: id) }?.resume()
                }
            }
            await group.next()
            group.cancelAll()
        }
        try Task.checkCancellation()
    }
}
