@testable import CourierCore
@testable import CourierGateway
@testable import CourierIngest
import CourierProtocol
import XCTest

/// The pieces behind the bulkheads, with no server: the per-device token bucket and the
/// parked chats of a consumer.
final class BulkheadUnitTests: XCTestCase {
    func testABucketAllowsItsBurstThenItsRateAndSaysHowLongToWait() {
        let limiter = DeviceRateLimiter(ratePerSecond: 10, burst: 5)
        let start = ContinuousClock.now
        for _ in 0..<5 { XCTAssertEqual(limiter.take(1, now: start), .allowed) }
        XCTAssertEqual(limiter.take(1, now: start), .limited(retryAfterSeconds: 1))
        // Another device has its own bucket.
        XCTAssertEqual(limiter.take(2, now: start), .allowed)
        // 10 per second: one token back after 100 ms, and only one.
        XCTAssertEqual(limiter.take(1, now: start + .milliseconds(100)), .allowed)
        XCTAssertEqual(limiter.take(1, now: start + .milliseconds(100)), .limited(retryAfterSeconds: 1))
        let slow = DeviceRateLimiter(ratePerSecond: 0.25, burst: 1)
        XCTAssertEqual(slow.take(1, now: start), .allowed)
        XCTAssertEqual(slow.take(1, now: start), .limited(retryAfterSeconds: 4))
    }

    func testTheBucketsAreBoundedAndIdleOnesGoFirst() {
        let limiter = DeviceRateLimiter(ratePerSecond: 1, burst: 2, maxDevices: 3)
        let start = ContinuousClock.now
        for device: UInt64 in 1...3 { _ = limiter.take(device, now: start) }
        // Device 1 has been idle long enough to refill; the others are busy.
        for _ in 0..<2 { _ = limiter.take(2, now: start + .seconds(3)) }
        _ = limiter.take(3, now: start + .seconds(3))
        XCTAssertEqual(limiter.take(4, now: start + .seconds(3)), .allowed)
        XCTAssertEqual(limiter.trackedDevices, 3)
        // Device 2 is still limited: its bucket was kept.
        XCTAssertEqual(limiter.take(2, now: start + .seconds(3)), .limited(retryAfterSeconds: 1))

        // Full of busy devices: the oldest sixteenth go at once, not one per newcomer.
        let busy = DeviceRateLimiter(ratePerSecond: 1, burst: 2, maxDevices: 32)
        for device: UInt64 in 1...32 { _ = busy.take(device, now: start + .milliseconds(Int64(device))) }
        XCTAssertEqual(busy.take(100, now: start + .milliseconds(40)), .allowed)
        XCTAssertEqual(busy.trackedDevices, 31, "devices 1 and 2 went, the newcomer came")
        // Device 3 kept its bucket (one token left), so its second take now is refused.
        XCTAssertEqual(busy.take(3, now: start + .milliseconds(41)), .allowed)
        XCTAssertEqual(busy.take(3, now: start + .milliseconds(41)), .limited(retryAfterSeconds: 1), "device 3's bucket was kept")
    }

    private func entry(_ offset: UInt64, chat: UInt64) -> ParkedChats.Entry {
        .init(offset: offset, message: AcceptedMessage(
            serverMessageID: offset, chatID: chat, senderUserID: 1, senderDeviceID: 1,
            clientMessageID: "m\(offset)", text: "t", clientSentAtMs: 0, acceptedAtMs: 0
        ))
    }

    func testAParkedChatHoldsTheCommitAndKeepsItsOrderWhileOthersPass() async throws {
        let parked = ParkedChats(resumingAt: 10, limit: 4)
        parked.park(7, [entry(10, chat: 7), entry(12, chat: 7)])
        // Another chat's records pass; the commit waits at the parked one.
        parked.markProcessed([11, 13])
        XCTAssertEqual(parked.committable, 10)
        XCTAssertTrue(parked.appendIfParked(7, [entry(14, chat: 7)]))
        XCTAssertFalse(parked.appendIfParked(8, [entry(15, chat: 8)]))
        XCTAssertFalse(parked.isFull)
        parked.park(9, [entry(16, chat: 9)])
        XCTAssertTrue(parked.isFull, "4 messages wait: the reader stops")

        try await Task.sleep(for: .milliseconds(20))
        let due = try XCTUnwrap(parked.nextDue())
        XCTAssertEqual(due.1.map(\.offset), due.0 == 7 ? [10, 12, 14] : [16])
        // A failure doubles the delay and keeps everything.
        let delay = parked.stored(0, of: due.0, failed: true, maxDelay: .seconds(1))
        XCTAssertEqual(delay, ParkedChats.firstDelay * 2)
        XCTAssertTrue(parked.isParked(due.0))

        // Chat 7 stores its first two, then the rest; then it is unparked.
        var seven = parked.nextDue()
        while seven?.0 != 7 {
            if let other = seven { _ = parked.stored(0, of: other.0, failed: true, maxDelay: .seconds(1)) }
            try await Task.sleep(for: .milliseconds(5))
            seven = parked.nextDue()
        }
        XCTAssertEqual(seven?.1.map(\.offset), [10, 12, 14])
        _ = parked.stored(2, of: 7, failed: false, maxDelay: .seconds(1))
        parked.markProcessed([10, 12])
        XCTAssertEqual(parked.committable, 14, "10 to 13 are done; 14 still waits")
        XCTAssertTrue(parked.isParked(7), "its third message still waits")
        while seven?.1.map(\.offset) != [14] {
            if let other = seven, other.0 != 7 { _ = parked.stored(0, of: other.0, failed: true, maxDelay: .seconds(1)) }
            try await Task.sleep(for: .milliseconds(5))
            seven = parked.nextDue()
        }
        _ = parked.stored(1, of: 7, failed: false, maxDelay: .seconds(1))
        XCTAssertFalse(parked.isParked(7), "empty again: unparked")
    }
}
