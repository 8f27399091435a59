@testable import CourierActors
@testable import CourierCore
import CourierProtocol
@testable import CourierSQLite
import Foundation
import Logging
import NIOConcurrencyHelpers
import XCTest

/// The Device actor's delivery, in process, on real SQLite storage: replay from a cursor, the
/// seam to live pushes, the acknowledgement window, resends, and delivery receipts.
final class DeliveryTests: XCTestCase {
    /// A provisioned database: alice (one device) and bob (two devices) in one chat.
    struct World {
        let storage: SQLiteStorage
        let chatID: UInt64
        let alice: (user: UInt64, device: UInt64)
        let bob: (user: UInt64, device: UInt64, second: UInt64)
        let nextID = NIOLockedValueBox<UInt64>(1)

        static func make() async throws -> World {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("courier-delivery-\(UUID().uuidString).sqlite3").path
            let storage = try SQLiteStorage(path: path)
            let alice = try await storage.createUser(name: "alice")
            let bob = try await storage.createUser(name: "bob")
            let aliceDevice = try await storage.createDevice(userID: alice.id, name: "phone")
            let bobDevice = try await storage.createDevice(userID: bob.id, name: "phone")
            let bobSecond = try await storage.createDevice(userID: bob.id, name: "laptop")
            for device in [aliceDevice, bobDevice, bobSecond] { _ = try await storage.issueToken(deviceID: device.id, expiresAt: nil) }
            let chat = try await storage.createChat(name: "general")
            try await storage.addMember(chatID: chat.id, userID: alice.id)
            try await storage.addMember(chatID: chat.id, userID: bob.id)
            return World(storage: storage, chatID: chat.id, alice: (alice.id, aliceDevice.id), bob: (bob.id, bobDevice.id, bobSecond.id))
        }

        /// Stores `count` messages from alice (or `sender`); returns them with their sequences.
        func send(_ count: Int, chatID: UInt64? = nil, from sender: (user: UInt64, device: UInt64)? = nil) async throws -> [StoredMessage] {
            let chat = chatID ?? self.chatID
            let sender = sender ?? alice
            let last = try await storage.chat(id: chat).lastSequence
            let messages = (0..<count).map { index -> StoredMessage in
                let id = nextID.withLockedValue { next in
                    defer { next += 1 }
                    return next
                }
                return StoredMessage(
                    serverMessageID: id, chatID: chat, sequence: 0, senderUserID: sender.user, senderDeviceID: sender.device,
                    clientMessageID: "m\(id)", text: "message \(id)", clientSentAtMilliseconds: 0, acceptedAtMilliseconds: 0
                )
            }
            return try await storage.storeMessages(messages, chatID: chat, afterSequence: last).map {
                guard case .stored(let message) = $0 else { fatalError("not stored: \($0)") }
                return message
            }
        }

        func device(_ id: UInt64, window: UInt64 = 1_000, ackTimeout: Duration = .seconds(10)) async throws -> DeviceEntity {
            var context = DeviceEntity.Context(storage: storage)
            context.maxUnackedPerChat = window
            context.ackTimeout = ackTimeout
            return try await DeviceEntity.activate(id: id, context: context)
        }

        /// Device `id`'s actor with a session attached (saying it holds `have`), and a reader
        /// taking what the session is pushed.
        func session(
            _ id: UInt64, window: UInt64 = 1_000, ackTimeout: Duration = .seconds(10), linkBytes: Int = 1 << 20, have: [ChatCursor] = []
        ) async throws -> (device: DeviceEntity, link: SessionLink, reader: Reader) {
            let device = try await device(id, window: window, ackTimeout: ackTimeout)
            let link = SessionLink(capacityBytes: linkBytes)
            let reader = Reader(link)
            try await device.attach(link, have: have)
            return (device, link, reader)
        }
    }

    /// Plays the session's writer: takes every batch off the link and keeps the pushed messages.
    final class Reader: Sendable {
        let pushed = NIOLockedValueBox<[ChatMessage]>([])
        let receipts = NIOLockedValueBox<[DeliveryReceipt]>([])

        init(_ link: SessionLink) {
            let pushed = self.pushed
            let receipts = self.receipts
            link.start {
                Task {
                    let batch = link.take()
                    for case .frame(let bytes) in batch.items {
                        switch try? ServerFrame(serializedBytes: bytes) {
                        case .push(.message(let message))?: pushed.withLockedValue { $0.append(message) }
                        case .push(.delivered(let receipt))?: receipts.withLockedValue { $0.append(receipt) }
                        default: break
                        }
                    }
                    link.finished(batch)
                }
            }
        }

        var sequences: [UInt64] { pushed.withLockedValue { $0.map(\.chatSequence) } }

        func waitFor(count: Int, timeout: Duration = .seconds(10)) async throws {
            try await waitUntil("\(count) pushes arrived", timeout: timeout) {
                pushed.withLockedValue { $0.count } >= count
            }
        }

        /// Gives late (wrong) pushes a moment to show up.
        func settle() async throws { try await Task.sleep(for: .milliseconds(300)) }
    }

    func testReplayThenLivePushesMeetWithoutAGapOrADuplicate() async throws {
        let world = try await World.make()
        _ = try await world.send(700)
        let (device, link, reader) = try await world.session(world.bob.device, window: 100_000, linkBytes: 16 * 1024)
        // Live messages arrive while the replay is still going (the small link makes it slow),
        // and some notifications come twice, as after a consumer retry.
        for _ in 0..<20 {
            let fresh = try await world.send(15)
            device.notify(fresh)
            if Bool.random() { device.notify(fresh) }
        }
        try await reader.waitFor(count: 1000)
        try await reader.settle()
        XCTAssertEqual(reader.sequences, Array(1...1000), "every message once, in order, across the seam")
        link.close(code: 1000, reason: "")
    }

    func testAMissedNotificationIsFilledFromStorageNeverSkipped() async throws {
        let world = try await World.make()
        _ = try await world.send(5)
        let (device, link, reader) = try await world.session(world.bob.device)
        try await reader.waitFor(count: 5)
        _ = try await world.send(3)  // stored, but the device never hears of them (a lost hand-off)
        let later = try await world.send(1)
        device.notify(later)
        try await reader.waitFor(count: 9)
        try await reader.settle()
        XCTAssertEqual(reader.sequences, Array(1...9), "the gap is filled in order before the newer message")
        link.close(code: 1000, reason: "")
    }

    func testTheDeviceStartsAfterWhatItHoldsElseAfterItsCursorAndAcksMoveTheCursor() async throws {
        let world = try await World.make()
        _ = try await world.send(10)
        let device = try await world.device(world.bob.device)

        let first = SessionLink(capacityBytes: 1 << 20)
        let firstReader = Reader(first)
        try await device.attach(first, have: [ChatCursor(chatID: world.chatID, sequence: 4), ChatCursor(chatID: 999, sequence: 3)])
        try await firstReader.waitFor(count: 6)
        XCTAssertEqual(firstReader.sequences, Array(5...10), "after what the device says it holds; a chat not its own is ignored")
        let advanced = device.acknowledge([ChatCursor(chatID: world.chatID, sequence: 7), ChatCursor(chatID: 999, sequence: 50)])
        XCTAssertEqual(advanced, [CursorAdvance(chatID: world.chatID, from: 0, to: 7)])
        let overreach = device.acknowledge([ChatCursor(chatID: world.chatID, sequence: 5_000)])
        XCTAssertEqual(overreach, [CursorAdvance(chatID: world.chatID, from: 7, to: 10)], "an ack past the chat's end counts to its end")
        // The session hands the advances to the cursor writer, which stores them in a batch.
        let writer = DeliveryCursorWriter(storage: world.storage, receipts: nil, logger: Logger(label: "test"))
        writer.record(advanced, userID: world.bob.user, deviceID: world.bob.device)
        writer.record(overreach, userID: world.bob.user, deviceID: world.bob.device)
        await writer.drain(timeout: .seconds(10))
        let stored = try await world.storage.deliveryCursor(deviceID: world.bob.device, chatID: world.chatID)
        XCTAssertEqual(stored, 10, "drained: what was recorded is stored")
        let backwards = device.acknowledge([ChatCursor(chatID: world.chatID, sequence: 3)])
        XCTAssertEqual(backwards, [], "a cursor never goes back")

        // A new session of the same device replaces the first and starts after the stored cursor.
        _ = try await world.send(2)
        let second = SessionLink(capacityBytes: 1 << 20)
        let secondReader = Reader(second)
        try await device.attach(second, have: [])
        XCTAssertEqual(first.closedBecause, "replaced by a newer session of this device")
        try await secondReader.waitFor(count: 2)
        try await secondReader.settle()
        XCTAssertEqual(secondReader.sequences, [11, 12])
        second.close(code: 1000, reason: "")
    }

    /// Real storage behind a switch that makes cursor writes fail while it is on.
    final class FailingCursors: DeliveryCursorStore {
        let inner: SQLiteStorage
        let failing = NIOLockedValueBox(true)
        let attempts = NIOLockedValueBox(0)

        init(_ inner: SQLiteStorage) {
            self.inner = inner
        }

        func advanceDeliveryCursors(_ cursors: [DeliveryCursor]) async throws(StorageError) {
            attempts.withLockedValue { $0 += 1 }
            if failing.withLockedValue({ $0 }) { throw .unavailable("disk trouble (test)") }
            try await inner.advanceDeliveryCursors(cursors)
        }
    }

    func testACursorWriteThatFailsIsKeptWidenedAndStoredOnceStorageIsBack() async throws {
        let world = try await World.make()
        _ = try await world.send(12)
        let store = FailingCursors(world.storage)
        let writer = DeliveryCursorWriter(storage: store, receipts: nil, gatherDelay: .milliseconds(5), logger: Logger(label: "test"))
        writer.record([CursorAdvance(chatID: world.chatID, from: 0, to: 5)], userID: world.bob.user, deviceID: world.bob.device)
        try await waitUntil("the write has failed twice") { store.attempts.withLockedValue { $0 } >= 2 }
        // A later acknowledgement while failing widens the advance that waits.
        writer.record([CursorAdvance(chatID: world.chatID, from: 5, to: 12)], userID: world.bob.user, deviceID: world.bob.device)
        XCTAssertEqual(writer.pendingCount, 1, "one pending advance per device and chat, however many acknowledgements")
        let stored = try await world.storage.deliveryCursor(deviceID: world.bob.device, chatID: world.chatID)
        XCTAssertEqual(stored, 0, "nothing stored while storage fails")
        store.failing.withLockedValue { $0 = false }
        try await waitUntil("the cursor is stored once storage is back") {
            try await world.storage.deliveryCursor(deviceID: world.bob.device, chatID: world.chatID) == 12
        }
        XCTAssertEqual(writer.pendingCount, 0)
    }

    /// Real storage that notes the thread each cursor write runs on.
    final class CursorWritesNoted: DeliveryCursorStore {
        let inner: SQLiteStorage
        let threads = NIOLockedValueBox<[String]>([])

        init(_ inner: SQLiteStorage) {
            self.inner = inner
        }

        func advanceDeliveryCursors(_ cursors: [DeliveryCursor]) async throws(StorageError) {
            threads.withLockedValue { $0.append(currentThreadName()) }
            try await inner.advanceDeliveryCursors(cursors)
        }
    }

    /// With a thread, the writer waits out its gathering on that thread's timer and writes from
    /// there (no dispatch timer, no hop); acknowledgements recorded while it waits share a write.
    func testAWriterWithAThreadGathersAndWritesOnThatThread() async throws {
        let world = try await World.make()
        _ = try await world.send(12)
        let store = CursorWritesNoted(world.storage)
        let thread = DedicatedThreadExecutor(name: "cursor-test")
        let writer = DeliveryCursorWriter(storage: store, receipts: nil, gatherDelay: .milliseconds(200), thread: thread, logger: Logger(label: "test"))
        writer.record([CursorAdvance(chatID: world.chatID, from: 0, to: 5)], userID: world.bob.user, deviceID: world.bob.device)
        writer.record([CursorAdvance(chatID: world.chatID, from: 5, to: 9)], userID: world.bob.user, deviceID: world.bob.device)
        writer.record([CursorAdvance(chatID: world.chatID, from: 0, to: 3)], userID: world.alice.user, deviceID: world.alice.device)
        await writer.drain(timeout: .seconds(10))
        let bobs = try await world.storage.deliveryCursor(deviceID: world.bob.device, chatID: world.chatID)
        let alices = try await world.storage.deliveryCursor(deviceID: world.alice.device, chatID: world.chatID)
        XCTAssertEqual(bobs, 9)
        XCTAssertEqual(alices, 3)
        XCTAssertEqual(store.threads.withLockedValue { $0 }, ["cursor-test"], "one write for the three, on the writer's thread")
    }

    func testTheWindowHoldsPushesUntilAcknowledgedAndUnackedPushesAreResent() async throws {
        let world = try await World.make()
        _ = try await world.send(25)
        let (device, link, reader) = try await world.session(world.bob.device, window: 10, ackTimeout: .milliseconds(200))
        try await reader.waitFor(count: 10)
        try await reader.settle()
        XCTAssertEqual(reader.sequences, Array(1...10), "no more than the window without an acknowledgement")

        _ = device.acknowledge([ChatCursor(chatID: world.chatID, sequence: 4)])
        try await reader.waitFor(count: 14)
        try await reader.settle()
        XCTAssertEqual(reader.sequences, Array(1...14), "each acknowledged push frees one place")

        try await Task.sleep(for: .milliseconds(250))
        let rewound = device.resendUnacknowledged()
        XCTAssertEqual(rewound, 1)
        try await reader.waitFor(count: 24)
        XCTAssertEqual(Array(reader.sequences.suffix(10)), Array(5...14), "what waited past the timeout comes again, in order")

        // The watchdog's hint: set while pushes are out, cleared once a check finds none.
        XCTAssertTrue(device.mayAwaitAcknowledgement)
        device.resendUnacknowledged()
        XCTAssertTrue(device.mayAwaitAcknowledgement, "a check that found pushes out keeps it")
        _ = device.acknowledge([ChatCursor(chatID: world.chatID, sequence: 24)])
        try await reader.waitFor(count: 25)
        _ = device.acknowledge([ChatCursor(chatID: world.chatID, sequence: 25)])
        XCTAssertTrue(device.mayAwaitAcknowledgement, "acknowledging alone does not clear it")
        device.resendUnacknowledged()
        XCTAssertFalse(device.mayAwaitAcknowledgement, "nothing out: the watchdog may skip this device")
        link.close(code: 1000, reason: "")
    }

    /// What a device says it holds (`Hello.have`) is the window's base, like an acknowledgement:
    /// it does not count as pushes waiting for one, and a resend starts after it.
    func testWhatTheDeviceSaysItHoldsIsTheWindowsBaseNotPushesOut() async throws {
        let world = try await World.make()
        _ = try await world.send(10)
        let (device, link, reader) = try await world.session(
            world.bob.device, window: 2, ackTimeout: .milliseconds(200), have: [ChatCursor(chatID: world.chatID, sequence: 5)]
        )
        try await reader.waitFor(count: 2)
        try await reader.settle()
        XCTAssertEqual(reader.sequences, [6, 7], "a full window after what it holds, though its stored cursor is 0")

        try await Task.sleep(for: .milliseconds(250))
        XCTAssertEqual(device.resendUnacknowledged(), 1)
        try await reader.waitFor(count: 4)
        try await reader.settle()
        XCTAssertEqual(reader.sequences, [6, 7, 6, 7], "the resend starts after what it holds")
        link.close(code: 1000, reason: "")
    }

    func testTheDevicesOwnMessagesComeBackWithoutHoldingTheWindowOrWaitingForAnAcknowledgement() async throws {
        let world = try await World.make()
        let (device, link, reader) = try await world.session(world.alice.device, window: 3, ackTimeout: .milliseconds(200))
        device.notify(try await world.send(5))
        try await reader.waitFor(count: 5)
        XCTAssertEqual(reader.sequences, Array(1...5), "the sender's own messages come back past a window of 3")
        try await Task.sleep(for: .milliseconds(250))
        XCTAssertEqual(device.resendUnacknowledged(), 0, "its own messages wait for no acknowledgement")

        // An own message behind a push that awaits its acknowledgement settles with it.
        let bob = (user: world.bob.user, device: world.bob.device)
        device.notify(try await world.send(1, from: bob))
        device.notify(try await world.send(1))
        try await reader.waitFor(count: 7)
        XCTAssertEqual(device.acknowledge([ChatCursor(chatID: world.chatID, sequence: 6)]), [CursorAdvance(chatID: world.chatID, from: 0, to: 6)])
        try await Task.sleep(for: .milliseconds(250))
        XCTAssertEqual(device.resendUnacknowledged(), 0, "7 settled once 6 was acknowledged")

        // Unacknowledged past the timeout, the push and the own message behind it come again.
        device.notify(try await world.send(1, from: bob))
        device.notify(try await world.send(1))
        try await reader.waitFor(count: 9)
        try await Task.sleep(for: .milliseconds(250))
        XCTAssertEqual(device.resendUnacknowledged(), 1)
        try await reader.waitFor(count: 11)
        XCTAssertEqual(Array(reader.sequences.suffix(4)), [8, 9, 8, 9])
        // The stored cursor moves only with what the device acknowledges.
        XCTAssertEqual(device.acknowledge([ChatCursor(chatID: world.chatID, sequence: 9)]), [CursorAdvance(chatID: world.chatID, from: 6, to: 9)])
        link.close(code: 1000, reason: "")
    }

    func testADeviceThatNeverReadsStallsTheLinkWithoutGrowingIt() async throws {
        let world = try await World.make()
        _ = try await world.send(500)
        let device = try await world.device(world.bob.device)
        let link = SessionLink(capacityBytes: 16 * 1024)
        try await device.attach(link, have: [])
        try await Task.sleep(for: .milliseconds(500))
        XCTAssertLessThan(16 * 1024 - link.roomBytes, 16 * 1024 + 512, "queued bytes stay within the bound (one frame of slack)")
        let stalled = link.stalled(now: .now)
        XCTAssertNotNil(stalled, "the watchdog sees a stalled writer")
        link.close(code: 1008, reason: "reader too slow")
        device.detach(link)
    }

    func testReceiptsGoOutOnceEveryDeviceOfEveryOtherMemberHasAcknowledged() async throws {
        let world = try await World.make()
        let messages = try await world.send(3)
        let chat = try await ChatEntity.activate(id: world.chatID, context: ChatEntity.Context(storage: world.storage))

        // Alice's own device acknowledging does not make her messages delivered.
        try await world.storage.advanceDeliveryCursor(deviceID: world.alice.device, chatID: world.chatID, to: 3)
        var due = try await chat.acknowledged(userID: world.alice.user, deviceID: world.alice.device, from: 0, to: 3)
        XCTAssertTrue(due.isEmpty)

        // One of bob's two devices: not yet.
        try await world.storage.advanceDeliveryCursor(deviceID: world.bob.device, chatID: world.chatID, to: 3)
        due = try await chat.acknowledged(userID: world.bob.user, deviceID: world.bob.device, from: 0, to: 3)
        XCTAssertTrue(due.isEmpty, "bob's laptop has not acknowledged")

        // The second through 2: receipts for 1 and 2, to alice's devices.
        try await world.storage.advanceDeliveryCursor(deviceID: world.bob.second, chatID: world.chatID, to: 2)
        due = try await chat.acknowledged(userID: world.bob.user, deviceID: world.bob.second, from: 0, to: 2)
        XCTAssertEqual(due.map(\.senderUserID), [world.alice.user])
        XCTAssertEqual(due.first?.receipts.map(\.chatSequence), [1, 2])
        XCTAssertEqual(due.first?.receipts.map(\.clientMessageID), messages.prefix(2).map(\.clientMessageID))

        // A fresh Chat actor (after passivation) still sends the receipt the next ack completes, once.
        let reloaded = try await ChatEntity.activate(id: world.chatID, context: ChatEntity.Context(storage: world.storage))
        try await world.storage.advanceDeliveryCursor(deviceID: world.bob.second, chatID: world.chatID, to: 3)
        due = try await reloaded.acknowledged(userID: world.bob.user, deviceID: world.bob.second, from: 2, to: 3)
        XCTAssertEqual(due.first?.receipts.map(\.chatSequence), [3])
        due = try await reloaded.acknowledged(userID: world.bob.user, deviceID: world.bob.second, from: 3, to: 3)
        XCTAssertTrue(due.isEmpty, "never twice")
    }

    func testAChatActivatedAfterTheCursorWasStoredStillSendsTheReceiptItCompletes() async throws {
        let world = try await World.make()
        _ = try await world.send(2)
        for device in [world.bob.device, world.bob.second] {
            try await world.storage.advanceDeliveryCursor(deviceID: device, chatID: world.chatID, to: 2)
        }
        // The cursor writer stores before it hands the acknowledgement over; the Chat actor is
        // activated only then (passivated meanwhile, or on another node of a cluster).
        let chat = try await ChatEntity.activate(id: world.chatID, context: ChatEntity.Context(storage: world.storage))
        var due = try await chat.acknowledged(userID: world.bob.user, deviceID: world.bob.second, from: 0, to: 2)
        XCTAssertEqual(due.first?.receipts.map(\.chatSequence), [1, 2])
        due = try await chat.acknowledged(userID: world.bob.user, deviceID: world.bob.device, from: 0, to: 2)
        XCTAssertTrue(due.isEmpty, "never twice")

        // Receipts for a sender with no device connected here are claimed but not read.
        _ = try await world.send(1)
        for device in [world.bob.device, world.bob.second] {
            try await world.storage.advanceDeliveryCursor(deviceID: device, chatID: world.chatID, to: 3)
        }
        _ = try await chat.acknowledged(userID: world.bob.user, deviceID: world.bob.device, from: 2, to: 3)
        due = try await chat.acknowledged(userID: world.bob.user, deviceID: world.bob.second, from: 2, to: 3, connected: { _ in false })
        XCTAssertTrue(due.isEmpty)
    }

    /// What a cluster node sees: the Chat is activated after the recipients' cursors were
    /// stored (on another node), and the first acknowledgement it hears is the sender's own
    /// device (here); the recipients' come after (news from the other node). Each device's
    /// first acknowledgement counts from where that device stood, not only the first of all.
    func testEachDevicesFirstAcknowledgementAfterActivationCompletesItsReceipts() async throws {
        let world = try await World.make()
        _ = try await world.send(2)
        for device in [world.alice.device, world.bob.device, world.bob.second] {
            try await world.storage.advanceDeliveryCursor(deviceID: device, chatID: world.chatID, to: 2)
        }
        let chat = try await ChatEntity.activate(id: world.chatID, context: ChatEntity.Context(storage: world.storage))
        var due = try await chat.acknowledged(userID: world.alice.user, deviceID: world.alice.device, from: 0, to: 2)
        XCTAssertTrue(due.isEmpty, "the sender's own device completes no receipt")
        due = try await chat.acknowledged(userID: world.bob.user, deviceID: world.bob.device, from: 0, to: 2)
        XCTAssertEqual(due.map(\.senderUserID), [world.alice.user])
        XCTAssertEqual(due.first?.receipts.map(\.chatSequence), [1, 2], "bob's acknowledgement, stored before activation, completes them")
        due = try await chat.acknowledged(userID: world.bob.user, deviceID: world.bob.second, from: 0, to: 2)
        XCTAssertTrue(due.isEmpty, "never twice from one activation")
    }
}

/// Waits up to `timeout` for `condition` to hold.
func waitUntil(_ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        if ContinuousClock.now > deadline { throw ServerTestError("timed out waiting until \(what)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}

extension DeviceEntity {
    /// Newly stored messages, as the consumers hand them over (encoded once).
    func notify(_ messages: [StoredMessage]) {
        notify(messages.map(EncodedPush.init))
    }
}
