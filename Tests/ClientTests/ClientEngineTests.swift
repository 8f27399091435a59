import CoAP
import CourierClient
@testable import CourierDevice
import CourierProtocol
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TestSupport
import XCTest

/// A CoAP peer that answers POST /v1/msg from a script and records when each request came.
final class ScriptedGateway: CoAPRequestHandler {
    let answers: NIOLockedValueBox<[CoAPMessage]>
    let arrivals = NIOLockedValueBox<[(ContinuousClock.Instant, SendMessage)]>([])

    init(_ answers: [CoAPMessage]) {
        self.answers = NIOLockedValueBox(answers)
    }

    func handle(_ request: IncomingRequest) async -> CoAPMessage {
        let message = try? SendMessage(serializedBytes: request.message.payload)
        arrivals.withLockedValue { $0.append((ContinuousClock.now, message ?? SendMessage(clientMessageID: "?", chatID: 0, text: "", clientSentAtMs: 0))) }
        return answers.withLockedValue { $0.isEmpty ? Self.accepted(message) : $0.removeFirst() }
    }

    static func accepted(_ message: SendMessage?) -> CoAPMessage {
        .response(.created, payload: SendResult(clientMessageID: message?.clientMessageID ?? "", serverMessageID: 7, chatID: message?.chatID ?? 0, chatSequence: 0, acceptedAtMs: 1).serializedBytes())
    }

    static func refusal(_ code: CoAPCode, _ wire: WireErrorCode, maxAge: UInt32? = nil) -> CoAPMessage {
        var response = CoAPMessage.response(code, payload: WireError(code: wire, message: "scripted", retryAfterSeconds: maxAge ?? 0).serializedBytes())
        if let maxAge { response.setUIntOption(.maxAge, maxAge) }
        return response
    }

    /// Serves on a loopback port until `body` ends.
    static func serving<T>(_ answers: [CoAPMessage], _ body: (ScriptedGateway, SocketAddress) async throws -> T) async throws -> T {
        let gateway = ScriptedGateway(answers)
        let endpoint = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true)
        let serving = Task { await endpoint.serve(gateway) }
        defer {
            serving.cancel()
            Task { await endpoint.close() }
        }
        return try await body(gateway, endpoint.localAddress)
    }
}

final class ReliableSenderTests: XCTestCase {
    func message(_ id: String = "m1") -> SendMessage {
        SendMessage(clientMessageID: id, chatID: 3, text: "hello", clientSentAtMs: 1)
    }

    func testA503WithMaxAgeIsRetriedNoSoonerThanMaxAgeWithTheSameID() async throws {
        try await ScriptedGateway.serving([ScriptedGateway.refusal(.serviceUnavailable, .overloaded, maxAge: 2)]) { gateway, address in
            let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
            var policy = ReliableSender.Policy()
            policy.initialBackoff = .milliseconds(10)
            let attempts = NIOLockedValueBox<[ReliableSender.Attempt]>([])
            let outcome = try await ReliableSender(endpoint: client, server: address, token: "t", policy: policy).send(message()) { attempt in
                attempts.withLockedValue { $0.append(attempt) }
            }
            await client.close()
            guard case .accepted(let result, _) = outcome else { return XCTFail("\(outcome)") }
            XCTAssertEqual(result.serverMessageID, 7)
            let arrivals = gateway.arrivals.withLockedValue { $0 }
            XCTAssertEqual(arrivals.count, 2)
            XCTAssertEqual(arrivals.map(\.1.clientMessageID), ["m1", "m1"], "a retry is the same message")
            XCTAssertGreaterThanOrEqual(arrivals[1].0 - arrivals[0].0, .seconds(2), "Max-Age is honoured")
            guard case .deferred(let code, _)? = attempts.withLockedValue({ $0.first }) else { return XCTFail("the wait is reported") }
            XCTAssertEqual(code, .serviceUnavailable)
        }
    }

    func testA4xxIsNotRetried() async throws {
        try await ScriptedGateway.serving([ScriptedGateway.refusal(.forbidden, .forbidden)]) { gateway, address in
            let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
            let outcome = try await ReliableSender(endpoint: client, server: address, token: "t").send(message())
            try await Task.sleep(for: .milliseconds(300))
            await client.close()
            XCTAssertEqual(outcome, .refused(code: .forbidden, error: WireError(code: .forbidden, message: "scripted", retryAfterSeconds: 0)))
            XCTAssertEqual(gateway.arrivals.withLockedValue { $0.count }, 1)
        }
    }

    func testNoAnswerMeansANewExchangeUntilTheServerAnswers() async throws {
        // Nothing listens on this port at first: the exchange times out and a new one starts.
        let port = try await freeUDPPort()
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
        var policy = ReliableSender.Policy()
        policy.exchangeTimeout = .milliseconds(700)
        policy.initialBackoff = .milliseconds(100)
        policy.maxBackoff = .milliseconds(200)
        let failures = NIOLockedValueBox(0)
        let sender = ReliableSender(endpoint: client, server: try SocketAddress(ipAddress: "127.0.0.1", port: port), token: "t", policy: policy)
        let message = self.message()
        let sending = Task { try await sender.send(message) { _ in failures.withLockedValue { $0 += 1 } } }
        try await Task.sleep(for: .seconds(2))
        XCTAssertGreaterThanOrEqual(failures.withLockedValue { $0 }, 1, "attempts failed while no one answered")
        let gateway = ScriptedGateway([])
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: port, serving: true)
        let serving = Task { await server.serve(gateway) }
        let outcome = try await sending.value
        serving.cancel()
        await server.close()
        await client.close()
        guard case .accepted = outcome else { return XCTFail("\(outcome)") }
    }
}

/// The timers a device runs on its event loop (`EventLoop.sleep`, the exchange deadline).
final class DeviceTimerTests: XCTestCase {
    func testALoopSleepLastsItsDurationAndEndsAtOnceWhenCancelled() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let clock = ContinuousClock()
        let start = clock.now
        try await loop.sleep(for: .milliseconds(200))
        XCTAssertGreaterThanOrEqual(clock.now - start, .milliseconds(200), "a sleep lasts its duration")

        let sleeper = Task { try await loop.sleep(for: .seconds(60)) }
        try await Task.sleep(for: .milliseconds(50))
        let cancelledAt = clock.now
        sleeper.cancel()
        do {
            try await sleeper.value
            XCTFail("a cancelled sleep throws")
        } catch is CancellationError {}
        XCTAssertLessThan(clock.now - cancelledAt, .seconds(5), "a cancelled sleep ends at once, not after its minute")
        let already = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await loop.sleep(for: .seconds(60))
        }
        do {
            try await already.value
            XCTFail("a sleep begun cancelled throws")
        } catch is CancellationError {}
    }

    /// One timer serves every exchange in flight: an exchange that ended is never cancelled,
    /// and one still running is cancelled at its own deadline, not at an earlier one's. Each
    /// cancellation records its instant, so no assertion depends on when the test wakes.
    func testExchangeDeadlinesCancelOnlyWhatIsOverdueWithOneTimer() async throws {
        let timeout = Duration.seconds(2)
        let deadlines = ExchangeDeadlines(eventLoop: MultiThreadedEventLoopGroup.singleton.next(), timeout: timeout)
        let clock = ContinuousClock()
        let cancelled = NIOLockedValueBox<[(String, ContinuousClock.Instant)]>([])
        func record(_ name: String) -> @Sendable () -> Void {
            { cancelled.withLockedValue { $0.append((name, ContinuousClock.now)) } }
        }
        func waitFor(_ count: Int) async throws {
            let start = clock.now
            while cancelled.withLockedValue({ $0.count }) < count && clock.now - start < .seconds(15) {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        let first = deadlines.start(cancel: record("first"))
        try await Task.sleep(for: .milliseconds(500))
        let secondStart = clock.now
        let second = deadlines.start(cancel: record("second"))
        // The first's deadline is 1.5 s away: ending it now is in time.
        XCTAssertFalse(deadlines.finish(first), "the first ended before its deadline")
        try await waitFor(1)
        let afterSecond = cancelled.withLockedValue { $0 }
        XCTAssertEqual(afterSecond.map(\.0), ["second"], "only the exchange still running is cancelled")
        if let (_, at) = afterSecond.first {
            XCTAssertGreaterThanOrEqual(at - secondStart, timeout, "at its own deadline, not at the first's (which armed the timer)")
        }
        XCTAssertTrue(deadlines.finish(second), "the second's deadline passed")

        let thirdStart = clock.now
        let third = deadlines.start(cancel: record("third"))
        try await waitFor(2)
        let afterThird = cancelled.withLockedValue { $0 }
        XCTAssertEqual(afterThird.map(\.0), ["second", "third"], "an exchange started after the timer went idle gets one again")
        if afterThird.count == 2 { XCTAssertGreaterThanOrEqual(afterThird[1].1 - thirdStart, timeout) }
        XCTAssertTrue(deadlines.finish(third))
    }

    /// The caller giving up ends a send at once, not at the exchange's deadline.
    func testCancellingASendEndsItsExchangeAtOnce() async throws {
        let (silent, client) = try await silentPeerAndClient()
        var policy = ReliableSender.Policy()
        policy.exchangeTimeout = .seconds(60)
        let sender = ReliableSender(endpoint: client, server: silent.localAddress!, token: "t", policy: policy)
        let message = self.message()
        let sending = Task { try await sender.send(message) }
        try await Task.sleep(for: .milliseconds(200))
        let clock = ContinuousClock()
        let cancelledAt = clock.now
        sending.cancel()
        do {
            _ = try await sending.value
            XCTFail("a cancelled send throws")
        } catch is CancellationError {}
        XCTAssertLessThan(clock.now - cancelledAt, .seconds(10), "the send ended on cancellation, not after its 60 s deadline")
        await client.close()
        try await silent.close()
    }

    /// A peer that reads every datagram and never answers: only the deadline ends an exchange.
    func testAnExchangeNobodyAnswersEndsAtItsDeadlineAndTheSenderTriesAgain() async throws {
        let (silent, client) = try await silentPeerAndClient()
        var policy = ReliableSender.Policy()
        policy.exchangeTimeout = .milliseconds(300)
        policy.initialBackoff = .milliseconds(50)
        policy.maxBackoff = .milliseconds(50)
        let reasons = NIOLockedValueBox<[String]>([])
        let sender = ReliableSender(endpoint: client, server: silent.localAddress!, token: "t", policy: policy)
        let message = self.message()
        let clock = ContinuousClock()
        let start = clock.now
        let sending = Task {
            try await sender.send(message) { attempt in
                if case .failed(let reason, _) = attempt { reasons.withLockedValue { $0.append(reason) } }
            }
        }
        while reasons.withLockedValue({ $0.count }) < 2 && clock.now - start < .seconds(20) {
            try await Task.sleep(for: .milliseconds(20))
        }
        let elapsed = clock.now - start
        sending.cancel()
        _ = try? await sending.value
        await client.close()
        try await silent.close()
        let seen = reasons.withLockedValue { $0 }
        XCTAssertGreaterThanOrEqual(seen.count, 2, "two exchanges ended unanswered: \(seen)")
        XCTAssertEqual(seen.prefix(2), ["no answer within 0.3 seconds", "no answer within 0.3 seconds"])
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(600), "each exchange waited out its deadline")
    }

    func message() -> SendMessage {
        SendMessage(clientMessageID: "m1", chatID: 1, text: "hello", clientSentAtMs: 1)
    }

    /// A UDP socket that reads every datagram and never answers (no ICMP either, so only a
    /// deadline or a cancellation ends an exchange with it), and a client endpoint.
    func silentPeerAndClient() async throws -> (any Channel, CoAPEndpoint) {
        let silent = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        return (silent, try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false))
    }
}

final class LocalStoreTests: XCTestCase {
    func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("courier-client-\(UUID().uuidString).sqlite3").path
    }

    func testTheOutboxSurvivesARestartAndForgetsOnlyWhatWasAccepted() throws {
        let path = temporaryPath()
        var ids: [String] = []
        do {
            let store = try LocalStore(path: path, userID: 1)
            for index in 1...3 { ids.append(try store.enqueue(chatID: 9, text: "message \(index)").clientMessageID) }
        }
        let reopened = try LocalStore(path: path, userID: 1)
        XCTAssertEqual(try reopened.outbox().map(\.clientMessageID), ids, "everything written is still there, in order")
        XCTAssertEqual(try reopened.nextToSend()?.clientMessageID, ids[0])
        try reopened.accepted(SendResult(clientMessageID: ids[0], serverMessageID: 70, chatID: 9, chatSequence: 0, acceptedAtMs: 1))
        try reopened.failed(clientMessageID: ids[1], reason: "4.03 not a member")
        XCTAssertEqual(try reopened.outbox().map(\.clientMessageID), [ids[1], ids[2]], "accepted is forgotten; failed stays, marked")
        XCTAssertEqual(try reopened.nextToSend()?.clientMessageID, ids[2], "a failed message is not sent again")
        XCTAssertEqual(try reopened.waitingCount(), 1)
        XCTAssertEqual(try reopened.ownState(clientMessageID: ids[0]), .accepted)
        XCTAssertEqual(try reopened.ownState(clientMessageID: ids[1]), .failed)
    }

    func testPushedMessagesAdvanceTheCursorAndOwnMessagesMoveToDelivered() async throws {
        let store = try LocalStore(path: temporaryPath(), userID: 1)
        let mine = try store.enqueue(chatID: 9, text: "mine")
        func pushed(_ sequence: UInt64, from user: UInt64, id: String) -> ChatMessage {
            ChatMessage(serverMessageID: 100 + sequence, chatID: 9, chatSequence: sequence, senderUserID: user, senderDeviceID: user, clientMessageID: id, text: id, clientSentAtMs: 1, acceptedAtMs: 1)
        }
        try await store.store([pushed(1, from: 2, id: "theirs"), pushed(2, from: 1, id: mine.clientMessageID)])
        let cursors = try await store.cursors()
        XCTAssertEqual(cursors, [ChatCursor(chatID: 9, sequence: 2)])
        XCTAssertEqual(try store.waitingCount(), 0, "our own message came back numbered: it left the outbox")
        XCTAssertEqual(try store.lines(chatID: 9).map(\.own), [nil, .accepted])
        await store.delivered(DeliveryReceipt(chatID: 9, chatSequence: 2, serverMessageID: 102, clientMessageID: mine.clientMessageID))
        XCTAssertEqual(try store.lines(chatID: 9).last?.own, .delivered)
    }

    func testChangesWaitInTheOutboxAcrossARestartAndAreAppliedInChatOrder() async throws {
        let path = temporaryPath()
        do {
            let store = try LocalStore(path: path, userID: 1)
            try store.enqueue(chatID: 9, text: "fixed", change: .edit(sequence: 1))
        }
        let store = try LocalStore(path: path, userID: 1)
        let waiting = try XCTUnwrap(try store.nextToSend())
        XCTAssertEqual(waiting.sendMessage.change, .edit(sequence: 1), "the outbox keeps the change, not only the text")
        XCTAssertEqual(try store.lines(chatID: 9).count, 0, "a change waiting to be sent is not a line of its own")

        func entry(_ sequence: UInt64, from user: UInt64, _ text: String, _ change: MessageChange? = nil) -> ChatMessage {
            ChatMessage(serverMessageID: 100 + sequence, chatID: 9, chatSequence: sequence, senderUserID: user, senderDeviceID: user,
                        clientMessageID: "c\(sequence)", text: text, clientSentAtMs: 1, acceptedAtMs: 1_000 + Int64(sequence), change: change)
        }
        try await store.store([
            entry(1, from: 1, "fxed"), entry(2, from: 2, "theirs"), entry(3, from: 1, "fixed", .edit(sequence: 1)),
            entry(4, from: 2, "", .delete(sequence: 2)), entry(5, from: 2, "again", .edit(sequence: 2)), entry(6, from: 2, "Lunch plans", .rename),
        ])
        let lines = try store.lines(chatID: 9)
        XCTAssertEqual(lines.map(\.text), ["fixed", "", "Lunch plans"], "edits and deletes are applied, not shown; a rename is a line")
        XCTAssertEqual(lines.map(\.edited), [true, false, false])
        XCTAssertEqual(lines.map(\.deleted), [false, true, false], "an edit after the delete changes nothing")
        XCTAssertEqual(lines.map(\.renamed), [false, false, true])
        XCTAssertEqual(try store.chats().first { $0.id == 9 }?.name, "Lunch plans", "the chat list shows the display name")
        XCTAssertEqual(try store.newestOwnMessage(chatID: 9)?.sequence, 1)
        XCTAssertEqual(store.takeArrivals().map(\.text), ["theirs"], "the bell hears of others' messages, not of changes")
        XCTAssertEqual(store.takeArrivals().count, 0, "once")
    }
}
