import Synchronization

/// A Bloom filter over every (device, client message id) stored: when it says "no", a new
/// message is certainly not stored yet and the gateway skips the database lookup; "maybe" costs
/// one lookup. Filled from storage at startup and by the consumers as they store.
///
/// Bounded: a fixed bit array (`bits`, 2^27 by default = 16 MiB, about 1% false positives at
/// 14 million keys). Past that the false-positive rate grows and more sends pay the lookup;
/// nothing is ever answered wrongly.
///
/// Lock-free: bits are only ever set, so an insert is one atomic OR per bit and a lookup one
/// load per bit. Under a lock, the gateway's event loops and the consumers' store thread
/// queued behind each other on every send and every stored message. A lookup racing the
/// insert of its own key may see only some of its bits and say "no"; callers order the two
/// through the gateway's accepted table (the consumer inserts before it settles the key there).
public final class DedupFilter: @unchecked Sendable {
    private let bitCount: UInt64
    private let hashCount: Int
    private let wordCount: Int
    /// Allocated once and never moved, as atomics require; freed in `deinit`.
    private let words: UnsafeMutablePointer<Atomic<UInt64>>

    public init(bits: Int = 1 << 27, hashCount: Int = 7) {
        precondition(bits >= 64 && hashCount >= 1)
        bitCount = UInt64(bits)
        self.hashCount = hashCount
        wordCount = (bits + 63) / 64
        words = .allocate(capacity: wordCount)
        for index in 0..<wordCount { (words + index).initialize(to: Atomic(0)) }
    }

    deinit {
        words.deinitialize(count: wordCount)
        words.deallocate()
    }

    public func insert(deviceID: UInt64, clientMessageID: String) {
        let (a, b) = hashes(deviceID, clientMessageID)
        for round in 0..<UInt64(hashCount) {
            let (word, mask) = bit(round, a, b)
            words[word].bitwiseOr(mask, ordering: .releasing)
        }
    }

    /// False only if the key was never inserted (by an insert that has returned).
    public func mightContain(deviceID: UInt64, clientMessageID: String) -> Bool {
        let (a, b) = hashes(deviceID, clientMessageID)
        for round in 0..<UInt64(hashCount) {
            let (word, mask) = bit(round, a, b)
            guard words[word].load(ordering: .acquiring) & mask != 0 else { return false }
        }
        return true
    }

    /// How many bits are set (for tests).
    var bitsSet: Int {
        (0..<wordCount).reduce(0) { $0 + words[$1].load(ordering: .acquiring).nonzeroBitCount }
    }

    /// The key's bit of this round: its word and the mask within it.
    private func bit(_ round: UInt64, _ a: UInt64, _ b: UInt64) -> (word: Int, mask: UInt64) {
        let position = (a &+ round &* b) % bitCount
        return (Int(position >> 6), 1 << (position & 63))
    }

    /// Double hashing (Kirsch-Mitzenmacher): the k positions are `a + i * b` for i in 0..<k.
    private func hashes(_ deviceID: UInt64, _ clientMessageID: String) -> (UInt64, UInt64) {
        var first = Hasher()
        first.combine(deviceID)
        first.combine(clientMessageID)
        var second = Hasher()
        second.combine(clientMessageID)
        second.combine(deviceID ^ 0x9E37_79B9_7F4A_7C15)
        return (UInt64(bitPattern: Int64(first.finalize())), UInt64(bitPattern: Int64(second.finalize())) | 1)
    }
}
