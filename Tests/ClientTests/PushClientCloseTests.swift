@testable import CourierDevice
import XCTest

/// Which closes from the server end a device's push session for good, and which it retries.
final class PushClientCloseTests: XCTestCase {
    func testOnlyABadTokenOrANewerSessionEndsForGoodAndEveryOtherCloseIsRetried() {
        // For good: reconnecting cannot help.
        XCTAssertEqual(PushClient.end(closeCode: 1008, reason: "bad token", welcomed: false), .refused("closed 1008 bad token"))
        XCTAssertEqual(
            PushClient.end(closeCode: 1001, reason: "replaced by a newer session of this device", welcomed: true),
            .refused("closed 1001 replaced by a newer session of this device")
        )
        // Retried: the same device with the same token is welcome again. A Hello that TCP
        // retransmitted past the server's hello timeout drew the first of these, and the device
        // that took it as final never reconnected (NetworkReliabilityTests, 20% drops).
        for (code, reason, welcomed) in [
            (UInt16(1008), "no Hello within the hello timeout", false),
            (1008, "reader too slow: pushes not read for 10.0 seconds", true),
            (1008, "messages sent faster than they are answered", true),
            (1001, "heartbeat timeout", true),
            (1001, "server shutting down", true),
            (1013, "too many sessions", false),
        ] {
            XCTAssertEqual(PushClient.end(closeCode: code, reason: reason, welcomed: welcomed), .ended(reason: "closed \(code) \(reason)", wasWelcomed: welcomed), reason)
        }
    }
}
