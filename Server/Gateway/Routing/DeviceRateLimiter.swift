import NIOConcurrencyHelpers

/// A token bucket per device: each request takes a token, tokens come back at `ratePerSecond`
/// up to `burst`. A device that floods is answered 4.29 (RFC 8516) with how long to wait, and
/// costs the server no more than that answer, so other devices keep their share.
///
/// Bounded: at most `maxDevices` buckets. At the bound, the buckets that have refilled (their
/// devices idle) are dropped, which forgets nothing; if every one is busy, the oldest sixteenth
/// go, and their devices start again with a full bucket.
final class DeviceRateLimiter: Sendable {
    struct Bucket {
        var tokens: Double
        var refilledAt: ContinuousClock.Instant
    }

    enum Decision: Equatable {
        case allowed
        /// Try again after this many whole seconds (at least 1).
        case limited(retryAfterSeconds: UInt32)
    }

    let ratePerSecond: Double
    let burst: Double
    let maxDevices: Int
    private let buckets: NIOLockedValueBox<[UInt64: Bucket]>

    init(ratePerSecond: Double, burst: Int, maxDevices: Int = 200_000) {
        precondition(ratePerSecond > 0 && burst >= 1 && maxDevices >= 1)
        self.ratePerSecond = ratePerSecond
        self.burst = Double(burst)
        self.maxDevices = maxDevices
        buckets = NIOLockedValueBox([:])
    }

    var trackedDevices: Int { buckets.withLockedValue { $0.count } }

    /// Takes one token for `deviceID` at `now`.
    func take(_ deviceID: UInt64, now: ContinuousClock.Instant = .now) -> Decision {
        buckets.withLockedValue { buckets in
            var bucket = buckets[deviceID] ?? Bucket(tokens: burst, refilledAt: now)
            if buckets[deviceID] == nil, buckets.count >= maxDevices { makeRoom(&buckets, now: now) }
            let elapsed = now - bucket.refilledAt
            bucket.tokens = min(burst, bucket.tokens + max(0, elapsed / .seconds(1)) * ratePerSecond)
            bucket.refilledAt = now
            defer { buckets[deviceID] = bucket }
            guard bucket.tokens >= 1 else {
                return .limited(retryAfterSeconds: UInt32(max(1, ((1 - bucket.tokens) / ratePerSecond).rounded(.up))))
            }
            bucket.tokens -= 1
            return .allowed
        }
    }

    private func makeRoom(_ buckets: inout [UInt64: Bucket], now: ContinuousClock.Instant) {
        let refill = Duration.seconds(burst / ratePerSecond)
        buckets = buckets.filter { now - $0.value.refilledAt < refill }
        if buckets.count >= maxDevices {
            // Still full of busy devices: the oldest sixteenth goes at once, so that a stream of
            // new devices does not pay a scan of every bucket each.
            let oldest = buckets.sorted { $0.value.refilledAt < $1.value.refilledAt }.prefix(max(1, maxDevices / 16))
            for (deviceID, _) in oldest { buckets[deviceID] = nil }
        }
    }
}
