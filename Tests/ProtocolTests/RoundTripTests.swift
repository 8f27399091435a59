import CourierProtocol
import Foundation
import XCTest

final class RoundTripTests: XCTestCase {
    func testEveryTypeRoundTrips() throws {
        try assertRoundTrips(Fixtures.sendMessages)
        try assertRoundTrips(Fixtures.sendResults)
        try assertRoundTrips(Fixtures.chatMessages)
        try assertRoundTrips(Fixtures.cursors)
        try assertRoundTrips(Fixtures.receipts)
        try assertRoundTrips(Fixtures.pushes)
        try assertRoundTrips(Fixtures.pushAcks)
        try assertRoundTrips(Fixtures.syncRequests)
        try assertRoundTrips(Fixtures.syncResponses)
        try assertRoundTrips(Fixtures.hellos)
        try assertRoundTrips(Fixtures.welcomes)
        try assertRoundTrips(Fixtures.heartbeats)
        try assertRoundTrips(Fixtures.errors)
        try assertRoundTrips(Fixtures.clientFrames)
        try assertRoundTrips(Fixtures.serverFrames)
        try assertRoundTrips(Fixtures.chatInfos)
        try assertRoundTrips(Fixtures.chatLists)
        try assertRoundTrips(Fixtures.createChats)
        try assertRoundTrips(Fixtures.joinChats)
        try assertRoundTrips(Fixtures.invites)
        try assertRoundTrips(Fixtures.redeemInvites)
        try assertRoundTrips(Fixtures.chatMembersRequests)
        try assertRoundTrips(Fixtures.chatMembers)
        try assertRoundTrips(Fixtures.changes)
        try assertRoundTrips(Fixtures.leaveChats)
        try assertRoundTrips(Fixtures.presences)
        try assertRoundTrips(Fixtures.signedIns)
        try assertRoundTrips(Fixtures.historyRequests)
        try assertRoundTrips(Fixtures.historyResponses)
        try assertRoundTrips(Fixtures.searchRequests)
        try assertRoundTrips(Fixtures.searchHits)
        try assertRoundTrips(Fixtures.searchResponses)
    }

    func testEncodingIsDeterministic() {
        for frame in Fixtures.serverFrames {
            XCTAssertEqual(frame.serializedBytes(), frame.serializedBytes())
        }
    }

    func testDecodesFromAnyCollectionOfBytes() throws {
        let message = Fixtures.sendMessages[0]
        let bytes = message.serializedBytes()
        let framed = [0xFF, 0xFE] + bytes + [0xFD]
        XCTAssertEqual(try SendMessage(serializedBytes: framed[2..<(framed.count - 1)]), message)
        XCTAssertEqual(try SendMessage(serializedBytes: Data(bytes)), message)
        XCTAssertEqual(try SendMessage(serializedBytes: bytes.lazy.map { $0 }), message)
    }

    /// Fields added by a newer peer are skipped, not rejected.
    func testUnknownFieldsAreIgnored() throws {
        let message = Fixtures.sendMessages[0]
        // Field 100 as a varint (tag 100 << 3 | 0 = 800 = 0xA0 0x06), then field 101 as bytes.
        let newer = message.serializedBytes() + [0xA0, 0x06, 0x01, 0xAA, 0x06, 0x02, 0x68, 0x69]
        XCTAssertEqual(try SendMessage(serializedBytes: newer), message)
    }

    func testUnknownErrorCodeSurvivesARoundTrip() throws {
        let error = WireError(code: .unrecognized(4242), message: "from the future")
        XCTAssertEqual(try WireError(serializedBytes: error.serializedBytes()), error)
    }

    private func assertRoundTrips<T: WireMessage>(
        _ values: [T],
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        XCTAssertFalse(values.isEmpty, "no fixtures for \(T.self)", file: file, line: line)
        for value in values {
            let decoded = try T(serializedBytes: value.serializedBytes())
            XCTAssertEqual(decoded, value, "\(T.self) changed in a round trip", file: file, line: line)
        }
    }
}
