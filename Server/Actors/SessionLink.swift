import CourierProtocol
import Foundation

/// The outbound side of one push session: every frame for the device goes through here, to the
/// session's single writer, in the order offered.
///
/// The writer is woken, not waited on: the first frame offered to an idle link calls the
/// writer's `wake` (the push session schedules one write on its event loop), the writer
/// `take`s everything queued by then and reports the batch `finished` once it has gone to the
/// socket. Frames offered meanwhile go in the next batch, so a burst of pushes costs one wake,
/// one write and one flush per session.
///
/// Bounded by bytes: queued and in-flight (taken, not yet finished) frames together stay
/// within `capacityBytes`, and `offer` refuses a frame past it (one frame is always taken when
/// nothing is queued or in flight). The Device's pump waits for room instead of offering
/// more; a reader that stops reading therefore stalls the link rather than growing it, and the
/// session's watchdog closes it once it has been stalled for the slow-reader timeout.
package final class SessionLink: @unchecked Sendable {
    // @unchecked: every stored property is guarded by `lock`.
    package enum Item: Sendable {
        case frame([UInt8])
        /// Write this close frame, then close the connection.
        case close(code: UInt16, reason: String)
    }

    /// What the writer took in one go.
    package struct Batch: Sendable {
        package var items: [Item]
        package var bytes: Int
    }

    let capacityBytes: Int
    private let lock = NSLock()
    private var queue: [Item] = []
    private var queuedBytes = 0
    private var inFlightBytes = 0
    private var closeReason: String?
    /// Called (outside the lock) when there is something to take and the writer is idle.
    private var wake: (@Sendable () -> Void)?
    /// The writer was woken or holds a batch: no other wake until it finishes.
    private var writerBusy = false
    private var roomWaiters: [CheckedContinuation<Void, Never>] = []
    private var lastProgress = ContinuousClock.now

    package init(capacityBytes: Int) {
        self.capacityBytes = capacityBytes
    }

    /// Installs the session's writer; what was offered before it is waiting for it.
    package func start(writer wake: @escaping @Sendable () -> Void) {
        let wakeNow = lock.withLock { () -> Bool in
            self.wake = wake
            return claimWriter()
        }
        if wakeNow { wake() }
    }

    /// Queues `frame` unless that would pass the bound or the session is closing.
    @discardableResult
    package func offer(_ frame: ServerFrame) -> Bool {
        offer(encoded: frame.serializedBytes())
    }

    /// Queues an encoded `ServerFrame` (one encoding of a push serves every recipient device).
    @discardableResult
    func offer(encoded bytes: [UInt8]) -> Bool {
        let (accepted, wake): (Bool, (@Sendable () -> Void)?) = lock.withLock {
            let held = queuedBytes + inFlightBytes
            guard closeReason == nil, held == 0 || held + bytes.count <= capacityBytes else { return (false, nil) }
            // Stalled time counts from when the link last had nothing to write.
            if held == 0 { lastProgress = ContinuousClock.now }
            queue.append(.frame(bytes))
            queuedBytes += bytes.count
            return (true, claimWriter() ? self.wake : nil)
        }
        wake?()
        return accepted
    }

    /// Marks the writer busy if it is idle, installed and there is something queued; the
    /// caller then wakes it outside the lock. Call with `lock` held.
    private func claimWriter() -> Bool {
        guard wake != nil, !writerBusy, !queue.isEmpty else { return false }
        writerBusy = true
        return true
    }

    /// Everything queued, in order, for the writer that was woken; its bytes are in flight
    /// until `finished`. Empty when there is nothing (the writer then finishes at once).
    package func take() -> Batch {
        lock.withLock {
            let batch = Batch(items: queue, bytes: queuedBytes)
            queue.removeAll(keepingCapacity: true)
            inFlightBytes += queuedBytes
            queuedBytes = 0
            return batch
        }
    }

    /// The writer handed `batch` to the socket (or the connection is gone): its bytes leave the
    /// bound, whoever waits for room is let in, and the writer is woken again if more came.
    package func finished(_ batch: Batch) {
        let (waiters, wake): ([CheckedContinuation<Void, Never>], (@Sendable () -> Void)?) = lock.withLock {
            inFlightBytes -= batch.bytes
            lastProgress = ContinuousClock.now
            writerBusy = false
            var waiters: [CheckedContinuation<Void, Never>] = []
            if queuedBytes + inFlightBytes <= capacityBytes / 2 {
                waiters = roomWaiters
                roomWaiters = []
            }
            return (waiters, claimWriter() ? self.wake : nil)
        }
        for waiter in waiters { waiter.resume() }
        wake?()
    }

    /// Bytes that may be queued now before `offer` refuses.
    var roomBytes: Int {
        lock.withLock { closeReason == nil ? max(0, capacityBytes - queuedBytes - inFlightBytes) : 0 }
    }

    package var isClosed: Bool { lock.withLock { closeReason != nil } }

    /// Why the session is closing, once it is.
    var closedBecause: String? { lock.withLock { closeReason } }

    /// Returns once the link is at most half full, or the session is closing.
    func waitForRoom() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = lock.withLock { () -> Bool in
                if closeReason != nil || queuedBytes + inFlightBytes <= capacityBytes / 2 { return true }
                roomWaiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Asks the writer to send a close frame after what is queued and end the session; a
    /// `lastFrame` (the Error that says why) goes in the same write as the close, past the
    /// byte bound. Only the first reason counts; later offers are refused.
    package func close(code: UInt16, reason: String, lastFrame: ServerFrame? = nil) {
        var items = lastFrame.map { [Item.frame($0.serializedBytes())] } ?? []
        items.append(.close(code: code, reason: reason))
        let (waiters, wake): ([CheckedContinuation<Void, Never>], (@Sendable () -> Void)?) = lock.withLock {
            guard closeReason == nil else { return ([], nil) }
            closeReason = reason
            if queue.isEmpty && inFlightBytes == 0 { lastProgress = ContinuousClock.now }
            queue.append(contentsOf: items)
            let waiters = roomWaiters
            roomWaiters = []
            return (waiters, claimWriter() ? self.wake : nil)
        }
        for waiter in waiters { waiter.resume() }
        wake?()
    }

    /// How long the writer has made no progress while it has something to write; nil when it
    /// is idle (nothing queued, nothing in flight).
    package func stalled(now: ContinuousClock.Instant) -> Duration? {
        lock.withLock { (inFlightBytes > 0 || !queue.isEmpty) ? now - lastProgress : nil }
    }
}
