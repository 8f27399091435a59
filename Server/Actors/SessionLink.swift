import CourierProtocol
import Foundation

/// The outbound side of one push session: every frame for the device goes through here, to the
/// session's single writer, in the order offered.
///
/// Bounded by bytes: `offer` refuses a frame that would take the queue past `capacityBytes`
/// (one frame is always taken into an empty queue). The Device actor's pump waits for room
/// instead of offering more; a reader that stops reading therefore stalls the queue rather
/// than growing it, and the session's watchdog closes it once it has been stalled for the
/// slow-reader timeout.
package final class SessionLink: @unchecked Sendable {
    // @unchecked: every stored property is guarded by `lock`.
    package enum Item: Sendable {
        case frame([UInt8])
        /// Write this close frame, then close the connection.
        case close(code: UInt16, reason: String)
    }

    let capacityBytes: Int
    private let lock = NSLock()
    private var queue: [Item] = []
    private var queuedBytes = 0
    private var closeReason: String?
    private var writerWaiting: CheckedContinuation<[Item], Never>?
    private var roomWaiters: [CheckedContinuation<Void, Never>] = []
    private var writing = false
    private var lastProgress = ContinuousClock.now

    package init(capacityBytes: Int) {
        self.capacityBytes = capacityBytes
    }

    /// Queues `frame` unless that would pass the bound or the session is closing.
    @discardableResult
    package func offer(_ frame: ServerFrame) -> Bool {
        offer(encoded: frame.serializedBytes())
    }

    /// Queues an encoded `ServerFrame` (one encoding of a push serves every recipient device).
    @discardableResult
    func offer(encoded bytes: [UInt8]) -> Bool {
        enum Decision { case refused, queued, handed(CheckedContinuation<[Item], Never>) }
        let decision: Decision = lock.withLock {
            guard closeReason == nil, queuedBytes == 0 || queuedBytes + bytes.count <= capacityBytes else { return .refused }
            if let waiting = writerWaiting {
                writerWaiting = nil
                writing = true
                lastProgress = ContinuousClock.now
                return .handed(waiting)
            }
            queue.append(.frame(bytes))
            queuedBytes += bytes.count
            return .queued
        }
        switch decision {
        case .refused: return false
        case .queued: return true
        case .handed(let writer):
            writer.resume(returning: [.frame(bytes)])
            return true
        }
    }

    /// Bytes that may be queued now before `offer` refuses.
    var roomBytes: Int {
        lock.withLock { closeReason == nil ? max(0, capacityBytes - queuedBytes) : 0 }
    }

    package var isClosed: Bool { lock.withLock { closeReason != nil } }

    /// Why the session is closing, once it is.
    var closedBecause: String? { lock.withLock { closeReason } }

    /// Returns once the queue is at most half full, or the session is closing.
    func waitForRoom() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = lock.withLock { () -> Bool in
                if closeReason != nil || queuedBytes <= capacityBytes / 2 { return true }
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
        let (writer, waiters): (CheckedContinuation<[Item], Never>?, [CheckedContinuation<Void, Never>]) = lock.withLock {
            guard closeReason == nil else { return (nil, []) }
            closeReason = reason
            let waiters = roomWaiters
            roomWaiters = []
            if let waiting = writerWaiting {
                writerWaiting = nil
                return (waiting, waiters)
            }
            queue.append(contentsOf: items)
            return (nil, waiters)
        }
        writer?.resume(returning: items)
        for waiter in waiters { waiter.resume() }
    }

    /// Everything queued, in order, waiting until there is something; the writer stops after
    /// a `.close`.
    package func next() async -> [Item] {
        await withCheckedContinuation { (continuation: CheckedContinuation<[Item], Never>) in
            let (items, waiters): ([Item], [CheckedContinuation<Void, Never>]) = lock.withLock {
                writing = false
                lastProgress = ContinuousClock.now
                // Whoever waits for room is let in: the queue is empty now, or about to be.
                let waiters = roomWaiters
                roomWaiters = []
                guard !queue.isEmpty else {
                    writerWaiting = continuation
                    return ([], waiters)
                }
                let items = queue
                queue.removeAll(keepingCapacity: true)
                queuedBytes = 0
                writing = true
                return (items, waiters)
            }
            for waiter in waiters { waiter.resume() }
            if !items.isEmpty { continuation.resume(returning: items) }
        }
    }

    /// How long the writer has made no progress while it has something to write; nil when it
    /// is idle (nothing queued, no write in flight).
    package func stalled(now: ContinuousClock.Instant) -> Duration? {
        lock.withLock { (writing || !queue.isEmpty) ? now - lastProgress : nil }
    }
}
