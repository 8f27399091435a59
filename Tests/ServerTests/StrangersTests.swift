@testable import CourierPush
import NIOCore
import NIOEmbedded
import XCTest

/// The push strangers' bound: the oldest goes to make room, but never one whose Hello is being
/// checked (up to a quarter of the bound).
final class StrangersTests: XCTestCase {
    func testTheOldestGoesButNotOneWhoseHelloIsBeingChecked() {
        let strangers = Strangers(bound: 8)
        XCTAssertEqual(strangers.checkingBound, 2)
        let channels = (0..<20).map { _ in EmbeddedChannel() }
        var tickets: [UInt64] = []
        for channel in channels.prefix(8) {
            let (ticket, evicted) = strangers.admit(channel)
            XCTAssertNil(evicted, "room below the bound")
            tickets.append(ticket)
        }
        // The two oldest say Hello; their tokens are being checked.
        strangers.startChecking(tickets[0])
        strangers.startChecking(tickets[1])
        // A third Hello past the checking bound is checked as a plain stranger.
        strangers.startChecking(tickets[2])
        XCTAssertEqual(strangers.count, 8)

        // Those being checked count apart: two more plain strangers fit.
        XCTAssertNil(strangers.admit(channels[8]).evicted)
        XCTAssertNil(strangers.admit(channels[9]).evicted)
        let (_, first) = strangers.admit(channels[10])
        XCTAssertTrue(first === channels[2], "the oldest not being checked goes")
        var evicted: [ObjectIdentifier] = []
        for channel in channels[11...] {
            if let gone = strangers.admit(channel).evicted { evicted.append(ObjectIdentifier(gone)) }
        }
        XCTAssertFalse(evicted.contains(ObjectIdentifier(channels[0])), "a Hello being checked is never evicted")
        XCTAssertFalse(evicted.contains(ObjectIdentifier(channels[1])))
        XCTAssertEqual(strangers.count, 10, "8 plain strangers and 2 being checked")
        XCTAssertEqual(evicted.count, 9, "each admission past the bound evicted one")

        XCTAssertTrue(strangers.leave(tickets[0]), "authenticated: no longer a stranger")
        XCTAssertFalse(strangers.leave(tickets[0]))
        XCTAssertFalse(strangers.leave(tickets[2]), "evicted already")
        XCTAssertEqual(strangers.count, 9)
    }
}
