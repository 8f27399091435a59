import CourierActors
import CourierCore
import XCTest

/// The receipts' memory of recent messages: a range is answered only when whole, and both
/// bounds hold.
final class RecentMessagesTests: XCTestCase {
    private func message(_ sequence: UInt64, chat: UInt64 = 1, sender: UInt64 = 7) -> StoredMessage {
        StoredMessage(serverMessageID: 1_000 + sequence, chatID: chat, sequence: sequence, senderUserID: sender, senderDeviceID: 70,
                      clientMessageID: "m\(sequence)", text: "t", clientSentAtMilliseconds: 0, acceptedAtMilliseconds: 0)
    }

    func testARangeIsAnsweredOnlyWhenEverySequenceOfItIsHereInOrder() {
        let recent = RecentMessages(perChat: 8, maxChats: 4)
        // Two partitions' transactions handed in out of order.
        recent.add([message(3), message(4)], chatID: 1)
        XCTAssertNil(recent.range(of: 1, after: 0, through: 4), "1 and 2 are missing")
        recent.add([message(1), message(2)], chatID: 1)
        let whole = recent.range(of: 1, after: 1, through: 4)
        XCTAssertEqual(whole?.map(\.sequence), [2, 3, 4])
        XCTAssertEqual(whole?.map(\.entry.clientMessageID), ["m2", "m3", "m4"])
        XCTAssertEqual(recent.range(of: 1, after: 4, through: 4)?.count, 0, "an empty range needs nothing")
        XCTAssertNil(recent.range(of: 2, after: 0, through: 1), "a chat never seen")
    }

    func testBothBoundsHold() {
        let recent = RecentMessages(perChat: 8, maxChats: 4)
        recent.add((1...20).map { message($0) }, chatID: 1)
        XCTAssertNil(recent.range(of: 1, after: 11, through: 13), "only the newest 8 (13...20) are kept")
        XCTAssertEqual(recent.range(of: 1, after: 12, through: 20)?.count, 8)
        XCTAssertNil(recent.range(of: 1, after: 0, through: 20), "wider than a chat's bound")
        for chat in UInt64(2)...6 { recent.add([message(1, chat: chat)], chatID: chat) }
        let kept = (UInt64(1)...6).filter { recent.range(of: $0, after: 0, through: 1) != nil || recent.range(of: $0, after: 19, through: 20) != nil }
        XCTAssertEqual(kept.count, 4, "at most 4 chats are remembered")
    }
}
