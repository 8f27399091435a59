@testable import CourierSimulator
import XCTest

final class DeliveryOracleTests: XCTestCase {
    /// Chat 0 reaches devices 0, 1, 2; chat 1 reaches devices 2, 3.
    private func makeOracle() -> DeliveryOracle {
        DeliveryOracle(runID: "run1", deviceCount: 4, recipients: [[0, 1, 2], [2, 3]]) { "device #\($0)" }
    }

    private func send(_ oracle: DeliveryOracle, chat: Int, from sender: Int, lane: Int = 0, index: Int, acknowledged: Bool = true) -> String {
        let (number, id) = oracle.willSend(.init(chat: chat, senderDevice: sender, lane: lane, laneIndex: index, sentAt: .now))!
        if acknowledged { oracle.acknowledged(number, at: .now) }
        return id
    }

    func testEveryAcknowledgedMessageAtEveryMemberDeviceOnceInOrderPasses() {
        let oracle = makeOracle()
        let first = send(oracle, chat: 0, from: 0, index: 0)
        let second = send(oracle, chat: 0, from: 0, index: 1)
        let other = send(oracle, chat: 1, from: 3, index: 0)
        for device in [0, 1, 2] {
            oracle.arrived(device: device, chat: 0, sequence: 1, clientMessageID: first, at: .now)
            oracle.arrived(device: device, chat: 0, sequence: 2, clientMessageID: second, at: .now)
        }
        XCTAssertEqual(oracle.progress.outstanding, 2, "chat 1's message has not arrived yet")
        for device in [2, 3] { oracle.arrived(device: device, chat: 1, sequence: 1, clientMessageID: other, at: .now) }
        // Another run's message and an id of no run are not this run's business.
        oracle.arrived(device: 0, chat: 0, sequence: 3, clientMessageID: "run0-1", at: .now)
        oracle.arrived(device: 0, chat: 0, sequence: 4, clientMessageID: "typed by a person", at: .now)

        let verdict = oracle.verdict()
        XCTAssertTrue(verdict.passed, "\(verdict.examples)")
        XCTAssertEqual(verdict.acknowledged, 3)
        XCTAssertEqual(verdict.expectedDeliveries, 8)
        XCTAssertEqual(verdict.delivered, 8)
        XCTAssertEqual(oracle.progress.outstanding, 0)
        XCTAssertEqual(oracle.latencies().delivery.count, 5, "a send->delivery latency per arrival at a device other than the sender")
    }

    func testAMissingArrivalIsLossAndNamesTheMessageAndTheDevice() {
        let oracle = makeOracle()
        let id = send(oracle, chat: 0, from: 0, index: 0)
        oracle.arrived(device: 0, chat: 0, sequence: 1, clientMessageID: id, at: .now)
        XCTAssertEqual(oracle.latencies().delivery.count, 0, "reaching the sender's own device is not delivery")
        oracle.arrived(device: 2, chat: 0, sequence: 1, clientMessageID: id, at: .now)
        XCTAssertEqual(oracle.latencies().delivery.count, 1)
        let verdict = oracle.verdict()
        XCTAssertFalse(verdict.passed)
        XCTAssertEqual(verdict.lost, 1)
        XCTAssertEqual(verdict.examples, ["lost: message \(id) (acknowledged) never reached device #1"])
    }

    func testAnUnacknowledgedMessageIsNotLostButStillMustNotRepeat() {
        let oracle = makeOracle()
        let id = send(oracle, chat: 0, from: 0, index: 0, acknowledged: false)
        XCTAssertEqual(oracle.verdict().unacknowledged, 1)
        XCTAssertTrue(oracle.verdict().passed)
        oracle.arrived(device: 1, chat: 0, sequence: 1, clientMessageID: id, at: .now)
        oracle.arrived(device: 1, chat: 0, sequence: 2, clientMessageID: id, at: .now)
        let verdict = oracle.verdict()
        XCTAssertEqual(verdict.duplicates, 1)
        XCTAssertEqual(verdict.examples, ["duplicate: message \(id) reached device #1 twice (chat positions 1 and 2)"])
    }

    func testALaneOutOfOrderAndDisagreeingPositionsAreOrderViolations() {
        let oracle = makeOracle()
        let first = send(oracle, chat: 0, from: 0, index: 0)
        let second = send(oracle, chat: 0, from: 0, index: 1)
        // Another lane of the same device keeps no order with lane 0.
        let concurrent = send(oracle, chat: 0, from: 0, lane: 1, index: 0)
        oracle.arrived(device: 1, chat: 0, sequence: 1, clientMessageID: concurrent, at: .now)
        oracle.arrived(device: 1, chat: 0, sequence: 2, clientMessageID: second, at: .now)
        oracle.arrived(device: 1, chat: 0, sequence: 3, clientMessageID: first, at: .now)
        XCTAssertEqual(oracle.verdict().orderViolations, 1)
        XCTAssertTrue(oracle.verdict().examples.contains("order: message \(first) reached device #1 after a later message of the same sender to the same chat"))
        // Device 2 sees another message at position 1 than device 1 did.
        oracle.arrived(device: 2, chat: 0, sequence: 1, clientMessageID: first, at: .now)
        XCTAssertEqual(oracle.verdict().orderViolations, 2)
    }

    func testAMessageInTheWrongChatOrAtANonMembersDeviceIsAViolationAndHidesNoLoss() {
        let oracle = makeOracle()
        let id = send(oracle, chat: 1, from: 2, index: 0)
        oracle.arrived(device: 2, chat: 0, sequence: 1, clientMessageID: id, at: .now)
        XCTAssertEqual(oracle.verdict().orderViolations, 1)
        // Device 0 is not in chat 1: its arrival must not stand in for device 3's.
        oracle.arrived(device: 0, chat: 1, sequence: 1, clientMessageID: id, at: .now)
        let verdict = oracle.verdict()
        XCTAssertEqual(verdict.orderViolations, 2)
        XCTAssertEqual(verdict.lost, 2, "devices 2 and 3 still lack it: device 2's arrival was in the wrong chat")
        XCTAssertEqual(oracle.progress.outstanding, 2)
    }

    func testALanesMessagesToDifferentChatsKeepNoOrderBetweenThem() {
        let oracle = makeOracle()
        // Device 2 is in both chats; its lane sends to chat 0, then chat 1.
        let toChat0 = send(oracle, chat: 0, from: 2, index: 0)
        let toChat1 = send(oracle, chat: 1, from: 2, index: 1)
        oracle.arrived(device: 2, chat: 1, sequence: 1, clientMessageID: toChat1, at: .now)
        oracle.arrived(device: 2, chat: 0, sequence: 1, clientMessageID: toChat0, at: .now)
        XCTAssertEqual(oracle.verdict().orderViolations, 0)
    }

    func testMessagesSentInTheWarmupAreJudgedButNotTimed() {
        let oracle = makeOracle()
        oracle.timeMessages(sentFrom: .now + .milliseconds(20))
        let early = send(oracle, chat: 1, from: 2, index: 0)
        Thread.sleep(forTimeInterval: 0.03)
        let late = send(oracle, chat: 1, from: 2, index: 1)
        for (sequence, id) in [(UInt64(1), early), (2, late)] { oracle.arrived(device: 3, chat: 1, sequence: sequence, clientMessageID: id, at: .now) }
        XCTAssertEqual(oracle.latencies().ack.count, 1)
        XCTAssertEqual(oracle.latencies().delivery.count, 1)
        XCTAssertEqual(oracle.verdict().lost, 2, "both are still judged: neither reached device 2")
    }

    func testMessageNumbersParseOnlyThisRunsIDs() {
        let oracle = makeOracle()
        XCTAssertEqual(oracle.messageNumber("run1-42"), 42)
        XCTAssertNil(oracle.messageNumber("run10-42"))
        XCTAssertNil(oracle.messageNumber("run1-"))
        XCTAssertNil(oracle.messageNumber("run1-x"))
        XCTAssertNil(oracle.messageNumber("run1"))
    }

    func testMessageTextCarriesTheIDAndHasTheRequestedSize() {
        XCTAssertEqual(SimDevice.text("run1-7", bytes: 100).utf8.count, 100)
        XCTAssertTrue(SimDevice.text("run1-7", bytes: 100).hasPrefix("sim run1-7 "))
        XCTAssertEqual(SimDevice.text("run1-7", bytes: 100).dropFirst("sim run1-7 ".count), Substring(String(repeating: ".", count: 89)), "padded with dots")
        XCTAssertEqual(SimDevice.text("run1-7", bytes: 3), "sim run1-7 ")
    }
}
