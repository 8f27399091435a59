import CourierCore
@testable import CourierPostgres
import XCTest

/// The payloads one node's NOTIFY carries to the others: within PostgreSQL's 8,000-byte limit,
/// nothing lost in the split, a node's own skipped, and anything malformed ignored.
final class ClusterNotificationsTests: XCTestCase {
    private static func chat(_ id: UInt64, frames: Int, frameBytes: Int = 100) -> ClusterNews.Chat {
        ClusterNews.Chat(
            chatID: id, sequence: 10 + UInt64(frames), members: [1, 2, id],
            messages: (0..<frames).map { ClusterNews.Message(sequence: 11 + UInt64($0), frame: [UInt8](repeating: UInt8(truncatingIfNeeded: id), count: frameBytes)) }
        )
    }

    private static func parsed(_ payloads: [String], by node: String = "other") -> ClusterNews {
        var news = ClusterNews()
        for payload in payloads {
            guard case .news(let part)? = ClusterNotifications.parse(payload, ownNode: node) else {
                XCTFail("not news: \(payload.prefix(40))")
                continue
            }
            news.chats += part.chats
            news.acknowledgements += part.acknowledgements
        }
        return news
    }

    func testNewsSplitsIntoPayloadsWithinTheLimitAndParsesBackWhole() {
        let news = ClusterNews(
            chats: (1...300).map { Self.chat($0, frames: 3) },
            acknowledgements: (1...200).map { ClusterNews.Acknowledgement(chatID: $0, userID: 7, deviceID: 70 + $0, from: 0, to: $0) }
        )
        let payloads = ClusterNotifications.payloads(node: "node-a", news)
        XCTAssertGreaterThan(payloads.count, 1)
        for payload in payloads {
            XCTAssertLessThanOrEqual(payload.utf8.count, ClusterNotifications.maxPayloadBytes)
            XCTAssertTrue(payload.hasPrefix("node-a;n;"))
        }
        XCTAssertEqual(Self.parsed(payloads), news)
        XCTAssertNil(ClusterNotifications.parse(payloads[0], ownNode: "node-a"), "a node skips its own news")
    }

    func testAChatTooLargeForOnePayloadGoesWithoutItsFramesThenWithoutItsMembers() {
        let large = Self.chat(5, frames: 3, frameBytes: 4_000)
        var expected = large
        expected.messages = []
        XCTAssertEqual(Self.parsed(ClusterNotifications.payloads(node: "a", ClusterNews(chats: [large]))).chats, [expected])

        let crowded = ClusterNews.Chat(chatID: 6, sequence: 1, members: Array(1_000_000...1_003_000), messages: [])
        XCTAssertEqual(Self.parsed(ClusterNotifications.payloads(node: "a", ClusterNews(chats: [crowded]))).chats, [ClusterNews.Chat(chatID: 6, sequence: 1)])
    }

    func testSessionMovesParseAndMalformedPayloadsAreIgnored() {
        XCTAssertEqual(ClusterNotifications.parse("a;s;42:3", ownNode: "b"), .sessionMoved(deviceID: 42, epoch: 3))
        for payload in ["", "a", "a;s;42", "a;s;x:1", "a;n;not base64!", "a;n;AAAA", "a;q;1:2", "a;n;" + Data([0x0A, 0x02, 0x08, 0x00]).base64EncodedString()] {
            XCTAssertNil(ClusterNotifications.parse(payload, ownNode: "b"), payload)
        }
    }
}
