@testable import CourierPush
import NIOCore
import NIOEmbedded
import XCTest

/// The push strangers' bound: the oldest of the source holding the most goes to make room, but
/// never one whose Hello is being checked (up to a quarter of the bound).
final class StrangersTests: XCTestCase {
    func testTheOldestGoesButNotOneWhoseHelloIsBeingChecked() {
        let strangers = Strangers(bound: 8)
        XCTAssertEqual(strangers.checkingBound, 2)
        let channels = (0..<20).map { _ in EmbeddedChannel() }
        var tickets: [UInt64] = []
        for channel in channels.prefix(8) {
            let (ticket, evicted) = strangers.admit(channel, from: .v4(1))
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
        XCTAssertNil(strangers.admit(channels[8], from: .v4(1)).evicted)
        XCTAssertNil(strangers.admit(channels[9], from: .v4(1)).evicted)
        let (_, first) = strangers.admit(channels[10], from: .v4(1))
        XCTAssertTrue(first === channels[2], "the oldest not being checked goes")
        var evicted: [ObjectIdentifier] = []
        for channel in channels[11...] {
            if let gone = strangers.admit(channel, from: .v4(1)).evicted { evicted.append(ObjectIdentifier(gone)) }
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

    func testAFloodFromOneSourceEvictsItsOwnAndNotADeviceFromAnother() {
        let strangers = Strangers(bound: 4)
        let device = EmbeddedChannel()
        let flood = (0..<50).map { _ in EmbeddedChannel() }
        XCTAssertNil(strangers.admit(device, from: .v4(7)).evicted, "the device came first: the oldest of all")
        var evicted: [ObjectIdentifier] = []
        for channel in flood {
            if let gone = strangers.admit(channel, from: .v4(9)).evicted { evicted.append(ObjectIdentifier(gone)) }
        }
        XCTAssertEqual(evicted.count, 47, "each admission past the bound evicted one")
        XCTAssertFalse(evicted.contains(ObjectIdentifier(device)), "the flood's source holds the most: its own go")
        XCTAssertEqual(evicted, flood.prefix(47).map { ObjectIdentifier($0) }, "oldest first, within the source")
        XCTAssertEqual(strangers.count, 4)

        // With every source holding as many, the oldest of all goes: here the device.
        let spread = Strangers(bound: 3)
        let first = EmbeddedChannel()
        _ = spread.admit(first, from: .v4(1))
        _ = spread.admit(EmbeddedChannel(), from: .v4(2))
        _ = spread.admit(EmbeddedChannel(), from: .v4(3))
        XCTAssertTrue(spread.admit(EmbeddedChannel(), from: .v4(4)).evicted === first)
    }

    func testSourcesAreIPv4AddressesAndIPv6Slash64s() throws {
        func source(_ ip: String) throws -> Strangers.Source { Strangers.Source(try SocketAddress(ipAddress: ip, port: 40_000)) }
        XCTAssertEqual(try source("192.0.2.1"), try source("192.0.2.1"))
        XCTAssertNotEqual(try source("192.0.2.1"), try source("192.0.2.2"))
        XCTAssertEqual(try source("2001:db8:1:2::1"), try source("2001:db8:1:2:ffff::9"), "one /64")
        XCTAssertNotEqual(try source("2001:db8:1:2::1"), try source("2001:db8:1:3::1"))
        XCTAssertEqual(try source("::ffff:192.0.2.1"), try source("192.0.2.1"), "an IPv4 peer seen on an IPv6 listener")
        XCTAssertNotEqual(try source("::ffff:192.0.2.1"), try source("::ffff:192.0.2.2"), "not one /64 for all of IPv4")
        XCTAssertEqual(Strangers.Source(nil), .unknown)
    }
}
