import NIOCore

/// Remembers the reply sent to each incoming Confirmable or Non-confirmable message for
/// EXCHANGE_LIFETIME, so a duplicate gets the same reply and is not processed twice (RFC 7252 §4.5).
/// A request still being handled is not here: the message layer's in-flight table covers it.
///
/// A message counts as a duplicate only if its token matches too: a peer that restarts on the same
/// port with a new Message ID sequence can reuse an ID within the lifetime (CoAP cannot prevent
/// it), and answering its new request with the old reply would stall it until it gives up.
///
/// Bounded by `capacity`: entries expire in insertion order, and at the bound the oldest is
/// forgotten early. A duplicate of a forgotten message is then processed again, which the
/// application tolerates through its own dedup keys.
struct DuplicateCache {
    private struct Slot {
        var token: [UInt8]
        /// The datagram sent in reply: an ACK (with or without a response), a NON response, or a RST.
        var reply: [UInt8]
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

    /// The reply sent to `key`, if remembered, not expired, and the message had the same token.
    mutating func reply(to key: MessageKey, token: [UInt8], now: NIODeadline) -> [UInt8]? {
        expire(now: now)
        guard let slot = slots[key], slot.token == token else { return nil }
        return slot.reply
    }

    /// Remembers `reply` as the answer to `key` for the lifetime, replacing an older entry.
    mutating func record(_ key: MessageKey, token: [UInt8], reply: [UInt8], now: NIODeadline) {
        expire(now: now)
        let expiry = now + lifetime
        slots[key] = Slot(token: token, reply: reply, expiry: expiry)
        insertionOrder.append((key, expiry))
        // Bounding the queue, not the dictionary: a replaced slot leaves a stale queue entry, and
        // a flood reusing one key must not grow the queue either.
        while insertionOrder.count > capacity, let oldest = insertionOrder.popFirst() {
            if slots[oldest.key]?.expiry == oldest.expiry { slots[oldest.key] = nil }
        }
    }

    private mutating func expire(now: NIODeadline) {
        while let oldest = insertionOrder.first, oldest.expiry <= now {
            insertionOrder.removeFirst()
            if slots[oldest.key]?.expiry == oldest.expiry { slots[oldest.key] = nil }
        }
    }
}
