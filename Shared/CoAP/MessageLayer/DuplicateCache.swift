import NIOCore

/// Remembers the reply sent to each incoming Confirmable or Non-confirmable message for
/// EXCHANGE_LIFETIME, so a duplicate gets the same reply and is not processed twice (RFC 7252 §4.5).
///
/// A message counts as a duplicate only if its token matches too: a peer that restarts on the same
/// port with a new Message ID sequence can reuse an ID within the lifetime (CoAP cannot prevent
/// it), and answering its new request with the old reply would stall it until it gives up.
///
/// Bounded by `capacity`: entries expire in insertion order, and at the bound the oldest is
/// forgotten early. A duplicate of a forgotten message is then processed again, which the
/// application tolerates through its own dedup keys.
struct DuplicateCache {
    enum Entry: Equatable {
        /// The message is being handled; no reply is final yet.
        case processing
        /// The datagram sent in reply (an ACK, with or without response, or a RST).
        case answered([UInt8])
    }

    private struct Slot {
        var token: [UInt8]
        var entry: Entry
        var expiry: NIODeadline
    }

    let capacity: Int
    let lifetime: TimeAmount
    private var slots: [MessageKey: Slot] = [:]
    private var insertionOrder = CircularBuffer<(key: MessageKey, expiry: NIODeadline)>()

    init(capacity: Int, lifetime: TimeAmount) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.lifetime = lifetime
    }

    var count: Int { slots.count }
    /// Entries in the expiry queue, stale ones included; never above `capacity`.
    var queuedCount: Int { insertionOrder.count }

    /// The entry for `key` if it is remembered, not expired, and was sent with the same token.
    mutating func lookup(_ key: MessageKey, token: [UInt8], now: NIODeadline) -> Entry? {
        expire(now: now)
        guard let slot = slots[key], slot.token == token else { return nil }
        return slot.entry
    }

    /// Starts remembering `key` as being processed, replacing what an older message left there.
    mutating func insert(_ key: MessageKey, token: [UInt8], now: NIODeadline) {
        expire(now: now)
        let expiry = now + lifetime
        slots[key] = Slot(token: token, entry: .processing, expiry: expiry)
        insertionOrder.append((key, expiry))
        // Bounding the queue, not the dictionary: a replaced slot leaves a stale queue entry, and
        // a flood reusing one key must not grow the queue either.
        while insertionOrder.count > capacity, let oldest = insertionOrder.popFirst() {
            if slots[oldest.key]?.expiry == oldest.expiry { slots[oldest.key] = nil }
        }
    }

    /// Records the reply to `key`, if it is still remembered.
    mutating func recordReply(_ key: MessageKey, datagram: [UInt8]) {
        slots[key]?.entry = .answered(datagram)
    }

    private mutating func expire(now: NIODeadline) {
        while let oldest = insertionOrder.first, oldest.expiry <= now {
            insertionOrder.removeFirst()
            if slots[oldest.key]?.expiry == oldest.expiry { slots[oldest.key] = nil }
        }
    }
}
