import NIOCore
import XCTest
@testable import CoAP

final class MessageLayerTests: XCTestCase {
    let server = try! SocketAddress(ipAddress: "127.0.0.1", port: 5683)
    let client = try! SocketAddress(ipAddress: "127.0.0.1", port: 40000)
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    func at(_ seconds: Double) -> NIODeadline { start + .nanoseconds(Int64(seconds * 1e9)) }

    func makeLayer(_ configure: (inout CoAPTransmissionParameters) -> Void = { _ in }) -> MessageLayer {
        var parameters = CoAPTransmissionParameters()
        configure(&parameters)
        return MessageLayer(parameters: parameters, seed: 1)
    }

    func sent(_ actions: [MessageLayer.Action]) -> [CoAPMessage] {
        actions.compactMap { if case .send(let bytes, _) = $0 { try? CoAPMessage.decode(bytes) } else { nil } }
    }

    func delivered(_ actions: [MessageLayer.Action]) -> [IncomingRequest] {
        actions.compactMap { if case .deliverRequest(let request) = $0 { request } else { nil } }
    }

    func completions(_ actions: [MessageLayer.Action]) -> [Result<CoAPMessage, CoAPClientError>] {
        actions.compactMap { if case .completeRequest(_, let result) = $0 { result } else { nil } }
    }

    func retransmissionDeadline(_ actions: [MessageLayer.Action]) -> NIODeadline? {
        for case .scheduleRetransmissionCheck(let deadline) in actions { return deadline }
        return nil
    }

    // MARK: - Client side

    func testConfirmableIsRetransmittedWithExponentialBackoffThenTimesOut() throws {
        var layer = makeLayer()
        let (_, actions) = layer.sendRequest(.request(.post, path: "/v1/msg"), to: server, now: at(0), jitter: 0)
        let first = try XCTUnwrap(sent(actions).first)
        XCTAssertEqual(first.type, .confirmable)
        var deadline = try XCTUnwrap(retransmissionDeadline(actions))
        XCTAssertEqual(deadline, at(2), "jitter 0 gives exactly ACK_TIMEOUT")
        let early = layer.retransmissionsDue(now: at(1.9), jitter: 0)
        XCTAssertEqual(early.retransmitted, 0, "nothing before its deadline")
        XCTAssertEqual(early.actions, [.scheduleRetransmissionCheck(at: at(2))], "and the check is asked for again")
        XCTAssertEqual(
            layer.retransmissionsDue(now: at(1.95), jitter: 0).actions, [.scheduleRetransmissionCheck(at: at(1.95) + .milliseconds(100))],
            "but no sooner than the slack (100 ms) after this one"
        )

        var expectedGaps = [4.0, 8, 16, 32]
        var elapsed = 2.0
        while !expectedGaps.isEmpty {
            let fired = layer.retransmissionsDue(now: deadline, jitter: 0)
            XCTAssertEqual(fired.retransmitted, 1)
            XCTAssertEqual(sent(fired.actions).map(\.messageID), [first.messageID], "a retransmission reuses the Message ID")
            XCTAssertEqual(sent(fired.actions).first?.token, first.token)
            deadline = try XCTUnwrap(retransmissionDeadline(fired.actions))
            elapsed += expectedGaps.removeFirst()
            XCTAssertEqual(deadline, at(elapsed))
        }
        let gaveUp = layer.retransmissionsDue(now: deadline, jitter: 0)
        XCTAssertEqual(completions(gaveUp.actions), [.failure(.timeout)], "given up after MAX_RETRANSMIT (4) retransmissions")
        XCTAssertTrue(sent(gaveUp.actions).isEmpty)
        XCTAssertNil(retransmissionDeadline(gaveUp.actions), "nothing left to check")
        XCTAssertEqual(layer.pendingRequests, 0)
    }

    func testOneCheckResendsWhatIsDueAndAsksForTheEarliestDeadlineLeft() throws {
        var layer = makeLayer()
        let other = try SocketAddress(ipAddress: "127.0.0.2", port: 5683)
        let (_, first) = layer.sendRequest(.request(.post, path: "/a"), to: server, now: at(0), jitter: 0)
        let (_, second) = layer.sendRequest(.request(.post, path: "/b"), to: other, now: at(0.5), jitter: 1)
        XCTAssertEqual(retransmissionDeadline(first), at(2))
        XCTAssertEqual(retransmissionDeadline(second), at(3.5))

        let check = layer.retransmissionsDue(now: at(2.1), jitter: 0)
        XCTAssertEqual(check.retransmitted, 1)
        XCTAssertEqual(sent(check.actions), sent(first), "only the one that is due")
        XCTAssertEqual(retransmissionDeadline(check.actions), at(3.5), "the second's deadline is now the earliest")
        let later = layer.retransmissionsDue(now: at(3.5), jitter: 0)
        XCTAssertEqual(sent(later.actions), sent(second))
        XCTAssertEqual(retransmissionDeadline(later.actions), at(6.1), "the first's doubled timeout from its resend")
    }

    func testInitialTimeoutHonoursTheRandomFactor() throws {
        var layer = makeLayer()
        let (_, actions) = layer.sendRequest(.request(.get, path: "/a"), to: server, now: at(0), jitter: 1)
        XCTAssertEqual(try XCTUnwrap(retransmissionDeadline(actions)), at(3), "ACK_TIMEOUT x ACK_RANDOM_FACTOR")
    }

    func testPiggybackedResponseCompletesAndStopsRetransmission() throws {
        var layer = makeLayer()
        let (token, actions) = layer.sendRequest(.request(.get, path: "/a"), to: server, now: at(0), jitter: 0)
        let request = try XCTUnwrap(sent(actions).first)
        XCTAssertNotNil(retransmissionDeadline(actions))
        var ack = CoAPMessage(type: .acknowledgement, code: .content, messageID: request.messageID, token: token, payload: [1])
        let done = layer.datagramReceived(ack.encode(), from: server, now: at(0.1), jitter: 0)
        XCTAssertEqual(completions(done).count, 1)
        XCTAssertEqual(try completions(done).first?.get().payload, [1])
        XCTAssertTrue(layer.retransmissionsDue(now: at(2), jitter: 0).actions.isEmpty, "no retransmission after the ACK, and nothing to check")
        ack.payload = [2]
        XCTAssertTrue(completions(layer.datagramReceived(ack.encode(), from: server, now: at(0.2), jitter: 0)).isEmpty, "a duplicate ACK completes nothing")
    }

    func testAckWithWrongTokenIsIgnored() throws {
        var layer = makeLayer()
        let (_, actions) = layer.sendRequest(.request(.get, path: "/a"), to: server, now: at(0), jitter: 0)
        let request = try XCTUnwrap(sent(actions).first)
        let ack = CoAPMessage(type: .acknowledgement, code: .content, messageID: request.messageID, token: [9, 9])
        XCTAssertTrue(completions(layer.datagramReceived(ack.encode(), from: server, now: at(0.1), jitter: 0)).isEmpty)
        XCTAssertEqual(layer.pendingRequests, 1)
    }

    func testEmptyAckThenSeparateResponse() throws {
        var layer = makeLayer()
        let (token, actions) = layer.sendRequest(.request(.post, path: "/v1/msg"), to: server, now: at(0), jitter: 0)
        let request = try XCTUnwrap(sent(actions).first)
        XCTAssertNotNil(retransmissionDeadline(actions))
        let afterAck = layer.datagramReceived(CoAPMessage.empty(.acknowledgement, messageID: request.messageID).encode(), from: server, now: at(0.5), jitter: 0)
        XCTAssertTrue(completions(afterAck).isEmpty, "an empty ACK is not the response")
        XCTAssertTrue(afterAck.contains { if case .scheduleSeparateResponseTimeout = $0 { true } else { false } })
        XCTAssertTrue(layer.retransmissionsDue(now: at(2), jitter: 0).actions.isEmpty, "no retransmission after the empty ACK")

        let separate = CoAPMessage(type: .confirmable, code: .created, messageID: 0x9000, token: token, payload: [7])
        let done = layer.datagramReceived(separate.encode(), from: server, now: at(3), jitter: 0)
        XCTAssertEqual(try completions(done).first?.get().payload, [7])
        XCTAssertEqual(sent(done), [CoAPMessage.empty(.acknowledgement, messageID: 0x9000)], "the separate response is acknowledged")

        // Our ACK was lost and the server retransmits: the ACK is replayed, nothing completes twice.
        let again = layer.datagramReceived(separate.encode(), from: server, now: at(5), jitter: 0)
        XCTAssertEqual(sent(again), [CoAPMessage.empty(.acknowledgement, messageID: 0x9000)])
        XCTAssertTrue(completions(again).isEmpty)
    }

    func testSeparateResponseTimeout() throws {
        var layer = makeLayer { $0.separateResponseTimeout = .seconds(10) }
        let (token, actions) = layer.sendRequest(.request(.post, path: "/a"), to: server, now: at(0), jitter: 0)
        let request = try XCTUnwrap(sent(actions).first)
        _ = layer.datagramReceived(CoAPMessage.empty(.acknowledgement, messageID: request.messageID).encode(), from: server, now: at(1), jitter: 0)
        XCTAssertEqual(completions(layer.separateResponseTimedOut(token: token, now: at(11), jitter: 0)), [.failure(.separateResponseTimeout)])
    }

    func testUnexpectedConfirmableResponseIsReset() {
        var layer = makeLayer()
        let stray = CoAPMessage(type: .confirmable, code: .content, messageID: 77, token: [1, 2, 3])
        XCTAssertEqual(sent(layer.datagramReceived(stray.encode(), from: server, now: at(0), jitter: 0)), [.empty(.reset, messageID: 77)])
    }

    func testResetFailsTheRequest() throws {
        var layer = makeLayer()
        let (_, actions) = layer.sendRequest(.request(.get, path: "/a"), to: server, now: at(0), jitter: 0)
        let request = try XCTUnwrap(sent(actions).first)
        let done = layer.datagramReceived(CoAPMessage.empty(.reset, messageID: request.messageID).encode(), from: server, now: at(0.1), jitter: 0)
        XCTAssertEqual(completions(done), [.failure(.reset)])
    }

    func testNSTARTQueuesTheSecondRequestUntilTheFirstIsAnswered() throws {
        var layer = makeLayer()
        let (firstToken, firstActions) = layer.sendRequest(.request(.get, path: "/1"), to: server, now: at(0), jitter: 0)
        let (_, secondActions) = layer.sendRequest(.request(.get, path: "/2"), to: server, now: at(0), jitter: 0)
        XCTAssertTrue(secondActions.isEmpty, "NSTART 1: one outstanding interaction per peer")
        let other = try SocketAddress(ipAddress: "127.0.0.2", port: 5683)
        XCTAssertEqual(sent(layer.sendRequest(.request(.get, path: "/3"), to: other, now: at(0), jitter: 0).actions).count, 1, "other peers are not held up")

        let first = try XCTUnwrap(sent(firstActions).first)
        let ack = CoAPMessage(type: .acknowledgement, code: .content, messageID: first.messageID, token: firstToken)
        let next = layer.datagramReceived(ack.encode(), from: server, now: at(0.1), jitter: 0)
        XCTAssertEqual(completions(next).count, 1)
        XCTAssertEqual(sent(next).map(\.uriPath), [["2"]], "the queued request goes out once the first completes")
    }

    func testPendingRequestsAreBounded() {
        var layer = makeLayer { $0.maxPendingRequests = 2 }
        _ = layer.sendRequest(.request(.get, path: "/1"), to: server, now: at(0), jitter: 0)
        _ = layer.sendRequest(.request(.get, path: "/2"), to: server, now: at(0), jitter: 0)
        let (_, actions) = layer.sendRequest(.request(.get, path: "/3"), to: server, now: at(0), jitter: 0)
        XCTAssertEqual(completions(actions), [.failure(.tooManyPendingRequests)])
    }

    func testCancelReleasesTheSlot() throws {
        var layer = makeLayer()
        let (firstToken, _) = layer.sendRequest(.request(.get, path: "/1"), to: server, now: at(0), jitter: 0)
        _ = layer.sendRequest(.request(.get, path: "/2"), to: server, now: at(0), jitter: 0)
        let actions = layer.cancelRequest(token: firstToken, now: at(1), jitter: 0)
        XCTAssertEqual(completions(actions).first, .failure(.cancelled))
        XCTAssertEqual(sent(actions).map(\.uriPath), [["2"]])
    }

    // MARK: - Server side

    func request(_ messageID: UInt16, type: CoAPMessage.MessageType = .confirmable, token: [UInt8] = [0xAA], options: [CoAPOption] = []) -> CoAPMessage {
        CoAPMessage(type: type, code: .post, messageID: messageID, token: token, options: [CoAPOption(number: .uriPath, string: "echo")] + options, payload: [1])
    }

    func testRequestIsDeliveredOnceAndTheResponsePiggybacked() throws {
        var layer = makeLayer()
        let incoming = request(0x1234)
        let actions = layer.datagramReceived(incoming.encode(), from: client, now: at(0), jitter: 0)
        let request = try XCTUnwrap(delivered(actions).first)
        XCTAssertEqual(request.message, incoming)

        let responded = layer.respond(to: request.key, with: .response(.changed, payload: [9]), now: at(0.2), jitter: 0)
        let ack = try XCTUnwrap(sent(responded).first)
        XCTAssertEqual(ack.type, .acknowledgement)
        XCTAssertEqual(ack.messageID, 0x1234)
        XCTAssertEqual(ack.token, [0xAA])
        XCTAssertEqual(ack.code, .changed)

        // A later duplicate gets the very same datagram and is not processed again.
        let replay = layer.datagramReceived(incoming.encode(), from: client, now: at(10), jitter: 0)
        XCTAssertEqual(sent(replay), [ack])
        XCTAssertTrue(delivered(replay).isEmpty)
    }

    func testSlowHandlerGetsEmptyAckThenSeparateConfirmableResponse() throws {
        var layer = makeLayer()
        let incoming = request(0x2000)
        let actions = layer.datagramReceived(incoming.encode(), from: client, now: at(0), jitter: 0)
        let key = try XCTUnwrap(delivered(actions).first).key
        XCTAssertTrue(actions.contains(.schedulePiggybackSweep(at: at(0.5))))

        // A sweep before the window's end acknowledges nothing and asks for the next sweep.
        XCTAssertEqual(layer.piggybackWindowsElapsed(now: at(0.4)), [.schedulePiggybackSweep(at: at(0.5))])
        XCTAssertEqual(sent(layer.piggybackWindowsElapsed(now: at(0.5))), [.empty(.acknowledgement, messageID: 0x2000)])
        XCTAssertTrue(layer.piggybackWindowsElapsed(now: at(0.6)).isEmpty, "acknowledged once, and no window is open")
        let responded = layer.respond(to: key, with: .response(.created, payload: [5]), now: at(3), jitter: 0)
        let separate = try XCTUnwrap(sent(responded).first)
        XCTAssertEqual(separate.type, .confirmable)
        XCTAssertNotEqual(separate.messageID, 0x2000)
        XCTAssertEqual(separate.token, [0xAA])
        XCTAssertEqual(retransmissionDeadline(responded), at(5))

        // The separate response is retransmitted until the client acknowledges it.
        XCTAssertEqual(sent(layer.retransmissionsDue(now: at(5), jitter: 0).actions), [separate])
        _ = layer.datagramReceived(CoAPMessage.empty(.acknowledgement, messageID: separate.messageID).encode(), from: client, now: at(5.1), jitter: 0)
        XCTAssertTrue(layer.retransmissionsDue(now: at(9), jitter: 0).actions.isEmpty)

        // A late duplicate of the request gets the empty ACK again, not a second processing.
        let late = layer.datagramReceived(incoming.encode(), from: client, now: at(20), jitter: 0)
        XCTAssertEqual(sent(late), [.empty(.acknowledgement, messageID: 0x2000)])
        XCTAssertTrue(delivered(late).isEmpty)
    }

    func testOneSweepAcknowledgesOnlyTheRequestsWhoseWindowPassedUnanswered() throws {
        var layer = makeLayer()
        let answered = try XCTUnwrap(delivered(layer.datagramReceived(request(0x2100).encode(), from: client, now: at(0), jitter: 0)).first).key
        _ = layer.datagramReceived(request(0x2101).encode(), from: client, now: at(0.1), jitter: 0)
        _ = layer.datagramReceived(request(0x2102).encode(), from: client, now: at(0.2), jitter: 0)
        XCTAssertEqual(sent(layer.respond(to: answered, with: .response(.changed), now: at(0.05), jitter: 0)).first?.type, .acknowledgement)

        let swept = layer.piggybackWindowsElapsed(now: at(0.65))
        XCTAssertEqual(sent(swept), [.empty(.acknowledgement, messageID: 0x2101)], "answered in time: no empty ACK; window still open: none yet")
        XCTAssertEqual(swept.last, .schedulePiggybackSweep(at: at(0.7)))
        XCTAssertEqual(sent(layer.piggybackWindowsElapsed(now: at(0.7))), [.empty(.acknowledgement, messageID: 0x2102)])
    }

    func testRetransmissionDuringLongProcessingGetsAnEmptyAck() throws {
        var layer = makeLayer { $0.piggybackWindow = .seconds(5) }
        let incoming = request(0x3000)
        let key = try XCTUnwrap(delivered(layer.datagramReceived(incoming.encode(), from: client, now: at(0), jitter: 0)).first).key
        let duplicate = layer.datagramReceived(incoming.encode(), from: client, now: at(2), jitter: 0)
        XCTAssertEqual(sent(duplicate), [.empty(.acknowledgement, messageID: 0x3000)], "each duplicate CON is acknowledged (RFC 7252 §4.5)")
        XCTAssertTrue(delivered(duplicate).isEmpty, "and not processed again")
        XCTAssertEqual(sent(layer.respond(to: key, with: .response(.changed), now: at(3), jitter: 0)).first?.type, .confirmable)
    }

    func testNonConfirmableRequestGetsNonConfirmableResponse() throws {
        var layer = makeLayer()
        let incoming = request(0x4000, type: .nonConfirmable)
        let actions = layer.datagramReceived(incoming.encode(), from: client, now: at(0), jitter: 0)
        XCTAssertFalse(actions.contains { if case .schedulePiggybackSweep = $0 { true } else { false } })
        let response = try XCTUnwrap(sent(layer.respond(to: try XCTUnwrap(delivered(actions).first).key, with: .response(.content), now: at(0.1), jitter: 0)).first)
        XCTAssertEqual(response.type, .nonConfirmable)
        XCTAssertEqual(response.token, [0xAA])
    }

    func testUnrecognizedCriticalOptionGetsBadOption() throws {
        var layer = makeLayer()
        let incoming = request(0x5000, options: [CoAPOption(number: CoAPOptionNumber(rawValue: 9), value: [1])])
        let actions = layer.datagramReceived(incoming.encode(), from: client, now: at(0), jitter: 0)
        XCTAssertTrue(delivered(actions).isEmpty)
        XCTAssertEqual(sent(actions).first?.code, .badOption)
        for case .send(let bytes, _) in actions {
            XCTAssertLessThanOrEqual(bytes.count, incoming.encode().count, "an error answer never amplifies the request")
        }
        // An unknown elective (even) option is ignored.
        let elective = request(0x5001, options: [CoAPOption(number: CoAPOptionNumber(rawValue: 10), value: [1])])
        XCTAssertEqual(delivered(layer.datagramReceived(elective.encode(), from: client, now: at(0), jitter: 0)).count, 1)
    }

    func testRequestsInFlightAreBoundedWithServiceUnavailable() throws {
        var layer = makeLayer { $0.maxRequestsInFlight = 2 }
        for id in UInt16(1)...2 { XCTAssertEqual(delivered(layer.datagramReceived(request(id).encode(), from: client, now: at(0), jitter: 0)).count, 1) }
        let refused = layer.datagramReceived(request(3).encode(), from: client, now: at(0), jitter: 0)
        XCTAssertTrue(delivered(refused).isEmpty)
        let answer = try XCTUnwrap(sent(refused).first)
        XCTAssertEqual(answer.code, .serviceUnavailable)
        XCTAssertEqual(answer.uintOption(.maxAge), 2)
    }

    func testMalformedConfirmableIsResetOthersIgnored() {
        var layer = makeLayer()
        XCTAssertEqual(sent(layer.datagramReceived([0x49, 0x01, 0x12, 0x34], from: client, now: at(0), jitter: 0)), [.empty(.reset, messageID: 0x1234)])
        XCTAssertTrue(layer.datagramReceived([0x59, 0x01, 0x12, 0x35], from: client, now: at(0), jitter: 0).isEmpty)
        XCTAssertTrue(layer.datagramReceived([0x40, 0x01], from: client, now: at(0), jitter: 0).isEmpty)
        XCTAssertTrue(layer.datagramReceived([0x80, 0x01, 0x12, 0x36], from: client, now: at(0), jitter: 0).isEmpty, "an unknown version is silently ignored, even as CON")
    }

    func testReusedMessageIDWhileTheFirstIsInFlightIsRejected() throws {
        var layer = makeLayer()
        let first = request(0x7100, token: [1])
        let key = try XCTUnwrap(delivered(layer.datagramReceived(first.encode(), from: client, now: at(0), jitter: 0)).first).key
        let intruder = layer.datagramReceived(request(0x7100, token: [2]).encode(), from: client, now: at(0.1), jitter: 0)
        XCTAssertTrue(delivered(intruder).isEmpty)
        XCTAssertEqual(sent(intruder), [.empty(.reset, messageID: 0x7100)])
        XCTAssertEqual(sent(layer.respond(to: key, with: .response(.changed), now: at(0.2), jitter: 0)).first?.token, [1], "the first request keeps its exchange")
    }

    func testConfirmablePingIsReset() {
        var layer = makeLayer()
        XCTAssertEqual(sent(layer.datagramReceived(CoAPMessage.empty(.confirmable, messageID: 9).encode(), from: client, now: at(0), jitter: 0)), [.empty(.reset, messageID: 9)])
    }

    func testOversizedDatagramGetsRequestEntityTooLarge() throws {
        var layer = makeLayer()
        let big = CoAPMessage(type: .confirmable, code: .post, messageID: 11, token: [1], options: [CoAPOption(number: .uriPath, string: "x")], payload: Array(repeating: 1, count: 100))
        let answer = try XCTUnwrap(sent(layer.oversizedDatagramReceived(big.encode(), from: client, acceptableSize: 1000, now: at(0))).first)
        XCTAssertEqual(answer.code, .requestEntityTooLarge)
        XCTAssertEqual(answer.uintOption(.size1), 1000)
    }

    func testDeduplicationLastsExchangeLifetime() throws {
        var layer = makeLayer()
        let incoming = request(0x6000)
        let key = try XCTUnwrap(delivered(layer.datagramReceived(incoming.encode(), from: client, now: at(0), jitter: 0)).first).key
        _ = layer.respond(to: key, with: .response(.changed), now: at(0.1), jitter: 0)
        XCTAssertTrue(delivered(layer.datagramReceived(incoming.encode(), from: client, now: at(246), jitter: 0)).isEmpty)
        XCTAssertEqual(delivered(layer.datagramReceived(incoming.encode(), from: client, now: at(248), jitter: 0)).count, 1, "after EXCHANGE_LIFETIME (247 s) a Message ID is new again")
    }

    func testSameMessageIDWithAnotherTokenIsANewRequest() throws {
        var layer = makeLayer()
        let first = request(0x7000, token: [1])
        let key = try XCTUnwrap(delivered(layer.datagramReceived(first.encode(), from: client, now: at(0), jitter: 0)).first).key
        _ = layer.respond(to: key, with: .response(.changed), now: at(0.1), jitter: 0)
        // The peer restarted on the same port and happened to pick the same Message ID.
        let restarted = request(0x7000, token: [2])
        let actions = layer.datagramReceived(restarted.encode(), from: client, now: at(5), jitter: 0)
        XCTAssertEqual(delivered(actions).map(\.message), [restarted], "not mistaken for a duplicate")
        XCTAssertEqual(sent(layer.respond(to: key, with: .response(.changed), now: at(5.1), jitter: 0)).first?.token, [2])
    }

    func testDuplicateCacheIsBounded() {
        var cache = DuplicateCache(capacity: 100, lifetime: .seconds(247))
        for id in 0..<10_000 {
            let peer = try! SocketAddress(ipAddress: "10.0.\(id / 250).\(id % 250)", port: 1000 + id % 50_000)
            cache.record(MessageKey(peer: peer, messageID: UInt16(id % 65_536)), token: [1], reply: [0x60, 0, 0, 0], now: at(Double(id) / 1000))
        }
        XCTAssertEqual(cache.count, 100)

        // One key flooded with new tokens keeps replacing its slot; the expiry queue stays bounded.
        let peer = try! SocketAddress(ipAddress: "10.9.9.9", port: 9)
        for token in 0..<10_000 {
            cache.record(MessageKey(peer: peer, messageID: 1), token: [UInt8(token % 256), UInt8(token / 256)], reply: [0x60, 0, 0, 0], now: at(20))
        }
        XCTAssertLessThanOrEqual(cache.queuedCount, 100)
        XCTAssertLessThanOrEqual(cache.count, 100)
    }

    func testCloseFailsPendingRequests() {
        var layer = makeLayer()
        _ = layer.sendRequest(.request(.get, path: "/1"), to: server, now: at(0), jitter: 0)
        _ = layer.sendRequest(.request(.get, path: "/2"), to: server, now: at(0), jitter: 0)
        XCTAssertEqual(completions(layer.close()), [.failure(.closed), .failure(.closed)])
    }
}
