@testable import CourierActors
import CourierProtocol
import NIOConcurrencyHelpers
import XCTest

/// The push session's outbound link: one wake per batch, and queued plus in-flight bytes
/// within the bound.
final class SessionLinkTests: XCTestCase {
    private func frame(_ size: Int) -> [UInt8] { [UInt8](repeating: 7, count: size) }

    func testTheWriterIsWokenOncePerBatchAndAgainForWhatCameWhileItWrote() {
        let link = SessionLink(capacityBytes: 1_000)
        let wakes = NIOLockedValueBox(0)
        XCTAssertTrue(link.offer(encoded: frame(10)), "offers before the writer is installed wait for it")
        link.start { wakes.withLockedValue { $0 += 1 } }
        XCTAssertEqual(wakes.withLockedValue { $0 }, 1, "installing the writer wakes it for what waits")

        XCTAssertTrue(link.offer(encoded: frame(10)))
        XCTAssertEqual(wakes.withLockedValue { $0 }, 1, "a woken writer is not woken again")
        let first = link.take()
        XCTAssertEqual(first.items.count, 2)
        XCTAssertEqual(first.bytes, 20)

        XCTAssertTrue(link.offer(encoded: frame(10)))
        XCTAssertEqual(wakes.withLockedValue { $0 }, 1, "nor while it writes")
        link.finished(first)
        XCTAssertEqual(wakes.withLockedValue { $0 }, 2, "what came during the write gets its own wake")
        let second = link.take()
        XCTAssertEqual(second.items.count, 1)
        link.finished(second)
        XCTAssertEqual(wakes.withLockedValue { $0 }, 2, "nothing left: no wake")
        XCTAssertNil(link.stalled(now: .now), "idle")
    }

    func testQueuedAndInFlightBytesStayWithinTheBound() {
        let link = SessionLink(capacityBytes: 100)
        link.start {}
        XCTAssertTrue(link.offer(encoded: frame(60)))
        let inFlight = link.take()
        XCTAssertNotNil(link.stalled(now: .now), "a batch in flight counts as unfinished work")
        XCTAssertFalse(link.offer(encoded: frame(60)), "60 in flight and 60 more would pass 100")
        XCTAssertTrue(link.offer(encoded: frame(40)))
        XCTAssertEqual(link.roomBytes, 0)
        link.finished(inFlight)
        XCTAssertEqual(link.roomBytes, 60, "the written batch left the bound")

        let empty = SessionLink(capacityBytes: 100)
        empty.start {}
        XCTAssertTrue(empty.offer(encoded: frame(500)), "one frame always goes into an empty link")
        XCTAssertFalse(empty.offer(encoded: frame(1)))
    }

    func testCloseGoesAfterWhatIsQueuedAndRefusesLaterOffers() {
        let link = SessionLink(capacityBytes: 100)
        let wakes = NIOLockedValueBox(0)
        link.start { wakes.withLockedValue { $0 += 1 } }
        XCTAssertTrue(link.offer(encoded: frame(10)))
        link.close(code: 1008, reason: "bad token", lastFrame: .error(WireError(code: .unauthorized, message: "bad token")))
        link.close(code: 1000, reason: "second reason")
        XCTAssertFalse(link.offer(encoded: frame(10)), "closing: no more offers")
        XCTAssertEqual(link.closedBecause, "bad token", "the first reason counts")
        let batch = link.take()
        XCTAssertEqual(batch.items.count, 3, "the frame, the Error frame, then the close")
        guard case .close(let code, _) = batch.items.last else { return XCTFail("no close at the end") }
        XCTAssertEqual(code, 1008)
    }
}
