import Synchronization

/// A Bloom filter over every (device, client message id) stored: when it says "no", a new
/// message is certainly not stored yet and the gateway skips the database lookup; "maybe" costs
/// one lookup. Filled from storage at startup and by the consumers as they store.
///
/// Bounded: a fixed bit array (`bits`, 2^27 by default = 16 MiB, about 1% false positives at
/// 14 million keys). Past that the false-positive rate grows and more sends pay the lookup;
/// nothing is ever answered wrongly.
public final class DedupFilter: Sendable {
    private let bitCount: Int
    private let hashCount: Int
    private let words: Mutex<[UInt64]>

    public init(bits: Int = 1 << 27, hashCount: Int = 7) {
        precondition(bits >= 64 && hashCount >= 1)
        bitCount = bits
        self.hashCount = hashCount
        words = Mutex([UInt64](repeating: 0, count: (bits + 63) / 64))
    }

    public func insert(deviceID: UInt64, clientMessageID: String) {
        let positions = self.positions(deviceID, clientMessageID)
        words.withLock { words in
            for position in positions { words[position >> 6] |= 1 << UInt64(position & 63) }
        }
    }

    /// False only if the key was never inserted.
    public func mightContain(deviceID: UInt64, clientMessageID: String) -> Bool {
        let positions = self.positions(deviceID, clientMessageID)
        return words.withLock { words in
            positions.allSatisfy { words[$0 >> 6] & (1 << UInt64($0 & 63)) != 0 }
        }
    }

    /// Double hashing (Kirsch-Mitzenmacher): k positions from two 64-bit hashes.
    private func positions(_ deviceID: UInt64, _ clientMessageID: String) -> [Int] {
        var first = Hasher()
        first.combine(deviceID)
        first.combine(clientMessageID)
        var second = Hasher()
        second.combine(clientMessageID)
        second.combine(deviceID ^ 0x9E37_79B9_7F4A_7C15)
        let a = UInt64(bitPattern: Int64(first.finalize()))
        let b = UInt64(bitPattern: Int64(second.finalize())) | 1
        return (0..<hashCount).map { Int((a &+ UInt64($0) &* b) % UInt64(bitCount)) }
    }
}
