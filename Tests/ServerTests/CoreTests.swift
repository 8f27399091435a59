@testable import CourierActors
@testable import CourierApp
@testable import CourierCore
@testable import CourierIngest
import CourierProtocol
@testable import CourierSQLite
import Foundation
import NIOConcurrencyHelpers
import XCTest

final class MessageIDTests: XCTestCase {
    func testIDsAreUniqueOrderedAndCarryTheirNodeAndTime() {
        let generator = MessageIDGenerator(nodeID: 513)
        let ids = (0..<20_000).map { _ in generator.next() }
        XCTAssertEqual(ids, ids.sorted(), "time-ordered")
        XCTAssertEqual(Set(ids).count, ids.count, "unique, even past 4096 in one millisecond")
        XCTAssertTrue(ids.allSatisfy { MessageIDGenerator.node(of: $0) == 513 })
        XCTAssertTrue(ids.allSatisfy { $0 < 1 << 63 }, "fits a signed 64-bit column")
        XCTAssertEqual(MessageIDGenerator.date(of: ids[0]).timeIntervalSinceNow, 0, accuracy: 5)
    }

    func testAClockGoingBackDoesNotRepeatOrReorder() {
        let now = NIOLockedValueBox(Date())
        let generator = MessageIDGenerator(nodeID: 1) { now.withLockedValue { $0 } }
        let first = generator.next()
        now.withLockedValue { $0 = $0.addingTimeInterval(-10) }
        let second = generator.next()
        XCTAssertGreaterThan(second, first)
    }

    func testAClockBeforeTheEpochAndARestartAfterTheClockWentBack() {
        let early = MessageIDGenerator(nodeID: 3) { Date(timeIntervalSince1970: 0) }
        let first = early.next()
        XCTAssertGreaterThan(early.next(), first, "no trap, still ordered")

        let before = MessageIDGenerator(nodeID: 0).next()
        let restarted = MessageIDGenerator(nodeID: 0) { Date().addingTimeInterval(-3600) }
        restarted.advance(past: before)
        XCTAssertGreaterThan(restarted.next(), before, "an id from before the restart never comes again")
    }

    /// Event loops take ids at once: none is handed out twice, and each thread's are in order.
    func testIDsTakenConcurrentlyAreUniqueAndEachThreadsAreOrdered() {
        let generator = MessageIDGenerator(nodeID: 7)
        let taken = NIOLockedValueBox([[UInt64]]())
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let ids = (0..<10_000).map { _ in generator.next() }
            taken.withLockedValue { $0.append(ids) }
        }
        let all = taken.withLockedValue { $0 }
        XCTAssertEqual(Set(all.joined()).count, 40_000)
        for ids in all { XCTAssertEqual(ids, ids.sorted()) }
    }

    func testTwoNodesNeverCollide() {
        let clock: @Sendable () -> Date = { Date(timeIntervalSince1970: 1_800_000_000) }
        let a = MessageIDGenerator(nodeID: 1, clock: clock)
        let b = MessageIDGenerator(nodeID: 2, clock: clock)
        let ids = (0..<5000).flatMap { _ in [a.next(), b.next()] }
        XCTAssertEqual(Set(ids).count, ids.count)
    }
}

/// An entity that counts its activations; used to watch the region.
actor CountingEntity: ShardedEntity {
    struct Context: Sendable {
        let activations: NIOLockedValueBox<[UInt64: Int]>
        let failFirst: Bool
    }

    let id: UInt64
    private var calls = 0

    init(id: UInt64) { self.id = id }

    static func activate(id: UInt64, context: Context) async throws -> CountingEntity {
        let count = context.activations.withLockedValue { $0[id, default: 0] += 1; return $0[id]! }
        try await Task.sleep(for: .milliseconds(20))
        if context.failFirst && count == 1 { throw StorageError.unavailable("first activation fails") }
        return CountingEntity(id: id)
    }

    func call() -> Int {
        calls += 1
        return calls
    }
}

final class ShardRegionTests: XCTestCase {
    func region(capacity: Int = 100, idle: Duration = .seconds(60), failFirst: Bool = false) -> (ShardRegion<CountingEntity>, NIOLockedValueBox<[UInt64: Int]>) {
        let activations = NIOLockedValueBox<[UInt64: Int]>([:])
        var configuration = ShardRegionConfiguration()
        configuration.shardCount = 4
        configuration.maxEntitiesPerShard = capacity
        configuration.idleTimeout = idle
        return (ShardRegion(kind: "test", context: .init(activations: activations, failFirst: failFirst), configuration: configuration), activations)
    }

    func testConcurrentFirstUsesActivateOneInstance() async throws {
        let (region, activations) = region()
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<50 { group.addTask { try await region.withEntity(7) { await $0.call() } } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        XCTAssertEqual(activations.withLockedValue { $0[7] }, 1, "one activation for fifty concurrent callers")
        XCTAssertEqual(results.sorted(), Array(1...50), "all reached the same instance")
        let live = await region.liveCount()
        XCTAssertEqual(live, 1)
    }

    func testIdleEntitiesPassivateAndComeBackFromScratch() async throws {
        let (region, activations) = region(idle: .milliseconds(50))
        _ = try await region.withEntity(1) { await $0.call() }
        let stillHere = await region.passivateIdle()
        XCTAssertEqual(stillHere, 0, "not idle long enough yet")
        try await Task.sleep(for: .milliseconds(80))
        let passivated = await region.passivateIdle()
        XCTAssertEqual(passivated, 1)
        let calls = try await region.withEntity(1) { await $0.call() }
        XCTAssertEqual(calls, 1, "a new instance")
        XCTAssertEqual(activations.withLockedValue { $0[1] }, 2)
    }

    func testAnEntityInUseIsNeverPassivated() async throws {
        let (region, activations) = region(idle: .milliseconds(10))
        try await region.withEntity(3) { _ in
            try await Task.sleep(for: .milliseconds(50))
            await region.passivateIdle()
        }
        XCTAssertEqual(activations.withLockedValue { $0[3] }, 1)
        let live = await region.liveCount()
        XCTAssertEqual(live, 1, "it was in use during the sweep")
    }

    func testAFailedActivationLeavesNothingAndTheNextUseRetries() async throws {
        let (region, activations) = region(failFirst: true)
        do {
            _ = try await region.withEntity(9) { await $0.call() }
            XCTFail("the first activation fails")
        } catch {}
        let calls = try await region.withEntity(9) { await $0.call() }
        XCTAssertEqual(calls, 1)
        XCTAssertEqual(activations.withLockedValue { $0[9] }, 2)
    }

    func testAFullShardEvictsTheLeastRecentlyUsedIdleOneOrRefuses() async throws {
        let (region, _) = region(capacity: 2)
        // Ids in one shard.
        let sameShard = (1...200).map(UInt64.init).filter { region.shardIndex(of: $0) == region.shardIndex(of: 1) }.prefix(3)
        let (a, b, c) = (sameShard[sameShard.startIndex], sameShard[sameShard.startIndex + 1], sameShard[sameShard.startIndex + 2])
        _ = try await region.withEntity(a) { await $0.call() }
        _ = try await region.withEntity(b) { await $0.call() }
        _ = try await region.withEntity(c) { await $0.call() }
        let live = await region.liveCount()
        XCTAssertEqual(live, 2, "the bound holds")
        // All busy: the third is refused rather than exceeding the bound.
        try await region.withEntity(b) { _ in
            try await region.withEntity(c) { _ in
                do {
                    _ = try await region.withEntity(a) { await $0.call() }
                    XCTFail("expected shardFull")
                } catch let error as ShardRegionError {
                    guard case .shardFull = error else { return XCTFail("\(error)") }
                }
            }
        }
    }
}

final class ChatStoreWriterTests: XCTestCase {
    /// A fresh database, removed after the test.
    private func temporaryStorage() throws -> SQLiteStorage {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-chat-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        return try SQLiteStorage(path: "\(directory)/db.sqlite3")
    }

    func testConcurrentStoresGetConsecutiveSequencesAndReplaysAreNoOps() async throws {
        let storage = try temporaryStorage()
        let chat = try await storage.createChat(name: "c")
        var devices: [Device] = []
        for index in 0..<10 {
            let user = try await storage.createUser(name: "u\(index)")
            try await storage.addMember(chatID: chat.id, userID: user.id)
            devices.append(try await storage.createDevice(userID: user.id, name: "d"))
        }
        let outsider = try await storage.createUser(name: "outsider")
        let writer = ChatStoreWriter(store: storage)
        let ids = MessageIDGenerator(nodeID: 0)
        let messages = devices.flatMap { device in
            (0..<20).map { StoredMessage(serverMessageID: ids.next(), chatID: chat.id, sequence: 0, senderUserID: device.userID, senderDeviceID: device.id, clientMessageID: "\(device.id)-\($0)", text: "t\($0)", clientSentAtMilliseconds: 0, acceptedAtMilliseconds: 0) }
        }
        // 200 callers at once, as partitions hand in batches: they share transactions.
        func storeAll(_ messages: [StoredMessage]) async throws -> [StoreOutcome?] {
            try await withThrowingTaskGroup(of: [StoreOutcome?].self) { group in
                for message in messages {
                    group.addTask {
                        guard case .written(let outcomes, _, _) = try await writer.store([ChatWrite(chatID: chat.id, messages: [message])])[0] else { return [] }
                        return outcomes
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
        }
        let first = try await storeAll(messages)
        let sequences = first.compactMap { if case .stored(let m)? = $0 { m.sequence } else { nil } }
        XCTAssertEqual(sequences.sorted(), (1...200).map { UInt64($0) })
        XCTAssertLessThan(writer.statistics.transactions, 200, "concurrent batches share transactions")

        let replay = try await storeAll(messages)
        XCTAssertEqual(replay.count, 200)
        XCTAssertTrue(replay.allSatisfy { if case .duplicate? = $0 { true } else { false } }, "a replay stores nothing")
        let stored = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 1000)
        XCTAssertEqual(stored.count, 200)

        let intruder = StoredMessage(serverMessageID: ids.next(), chatID: chat.id, sequence: 0, senderUserID: outsider.id, senderDeviceID: 999, clientMessageID: "x", text: "x", clientSentAtMilliseconds: 0, acceptedAtMilliseconds: 0)
        guard case .written(let refused, _, let members) = try await writer.store([ChatWrite(chatID: chat.id, messages: [intruder])])[0] else { return XCTFail("written") }
        XCTAssertEqual(refused, [nil], "a non-member's message is not stored")
        XCTAssertEqual(members, Set(devices.map(\.userID)), "the write reports the members the fan-out reaches")
        try await storage.addMember(chatID: chat.id, userID: outsider.id)
        guard case .written(let accepted, _, let newMembers) = try await writer.store([ChatWrite(chatID: chat.id, messages: [intruder])])[0] else { return XCTFail("written") }
        XCTAssertEqual(accepted.first??.storedSequence, 201, "once a member, at once: membership is read inside the transaction")
        XCTAssertTrue(newMembers.contains(outsider.id))
    }

    /// A chat of one member, and a maker of one-message writes to it by client message id.
    private func oneMessageWrites(_ storage: SQLiteStorage) async throws -> (Chat, @Sendable (String) -> [ChatWrite]) {
        let user = try await storage.createUser(name: "u")
        let device = try await storage.createDevice(userID: user.id, name: "d")
        let chat = try await storage.createChat(name: "c", memberIDs: [user.id])
        let ids = MessageIDGenerator(nodeID: 0)
        return (chat, { clientID in
            [ChatWrite(chatID: chat.id, messages: [StoredMessage(serverMessageID: ids.next(), chatID: chat.id, sequence: 0, senderUserID: user.id, senderDeviceID: device.id, clientMessageID: clientID, text: clientID, clientSentAtMilliseconds: 0, acceptedAtMilliseconds: 0)])]
        })
    }

    /// Storage whose transactions take `delay` longer, so batches come while one runs.
    private struct SlowStore: ChatBatchStore {
        let storage: SQLiteStorage
        let delay: Duration
        func storeBatch(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
            try? await Task.sleep(for: delay)
            return try await storage.storeBatch(writes)
        }
        func makeDurable() async throws(StorageError) { try await storage.makeDurable() }
        var executor: (any TaskExecutor)? { storage.executor }
    }

    /// Batches that come while a transaction runs are carried by a writer task, which waits
    /// out the linger too; after a quiet spell longer than the linger, a batch does not wait.
    func testWithALingerTheWriterTaskWaitsItOutAndAQuietSpellDoesNot() async throws {
        let storage = try temporaryStorage()
        let (_, write) = try await oneMessageWrites(storage)
        let linger = Duration.milliseconds(1500)
        let writer = ChatStoreWriter(store: SlowStore(storage: storage, delay: .milliseconds(500)), linger: linger)
        let start = ContinuousClock.now
        async let first = writer.store(write("first"))
        try await Task.sleep(for: .milliseconds(200))
        let later = try await withThrowingTaskGroup(of: [ChatWriteResult].self) { group in
            for index in 0..<3 { group.addTask { try await writer.store(write("later\(index)")) } }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        _ = try await first
        XCTAssertEqual(later.count, 3)
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - start, linger, "the batches that came during the first transaction waited for the linger")
        XCTAssertEqual(writer.statistics.transactions, 2, "and shared one transaction")

        try await Task.sleep(for: linger + .milliseconds(100))
        let quiet = ContinuousClock.now
        _ = try await writer.store(write("after a quiet spell"))
        XCTAssertLessThan(ContinuousClock.now - quiet, linger, "not held back")
        XCTAssertEqual(writer.statistics.transactions, 3)
    }

    /// With a linger, a batch after a quiet spell is written at once; batches handed in within
    /// the linger of the last transaction's start wait for it and share one transaction.
    func testWithALingerBatchesWithinItShareOneTransactionAndALoneOneIsNotHeldBack() async throws {
        let storage = try temporaryStorage()
        let (chat, write) = try await oneMessageWrites(storage)
        let linger = Duration.seconds(2)
        let writer = ChatStoreWriter(store: storage, linger: linger)
        let start = ContinuousClock.now
        _ = try await withTaskExecutorPreference(storage.executor) { try await writer.store(write("first")) }
        XCTAssertLessThan(ContinuousClock.now - start, linger, "the first batch does not wait")
        XCTAssertEqual(writer.statistics.transactions, 1)

        let results = try await withTaskExecutorPreference(storage.executor) {
            try await withThrowingTaskGroup(of: [ChatWriteResult].self) { group in
                for index in 0..<10 { group.addTask { try await writer.store(write("m\(index)")) } }
                return try await group.reduce(into: []) { $0 += $1 }
            }
        }
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - start, linger, "they waited for the linger")
        XCTAssertEqual(results.count, 10)
        XCTAssertEqual(writer.statistics.transactions, 2, "the ten batches within the linger share one transaction")
        let history = try await storage.history(chatID: chat.id, afterSequence: 0, limit: 100)
        XCTAssertEqual(history.map(\.sequence), (1...11).map { UInt64($0) })
    }

    func testAChatThatFailsIsRolledBackAloneAndAMissingChatIsSaid() async throws {
        let storage = try temporaryStorage()
        let user = try await storage.createUser(name: "u")
        let device = try await storage.createDevice(userID: user.id, name: "d")
        let good = try await storage.createChat(name: "good", memberIDs: [user.id])
        let bad = try await storage.createChat(name: "bad", memberIDs: [user.id])
        func message(_ id: UInt64, _ clientID: String) -> StoredMessage {
            StoredMessage(serverMessageID: id, chatID: 0, sequence: 0, senderUserID: user.id, senderDeviceID: device.id, clientMessageID: clientID, text: "word\(clientID)", clientSentAtMilliseconds: 0, acceptedAtMilliseconds: 0)
        }
        // The bad chat's second message reuses the first's server message id: the insert fails
        // on the primary key after its first message went in, and the savepoint takes both back.
        let results = try await storage.storeBatch([
            ChatWrite(chatID: good.id, messages: [message(1, "a")]),
            ChatWrite(chatID: bad.id, messages: [message(2, "b"), message(2, "c")]),
            ChatWrite(chatID: 999_999, messages: [message(3, "d")]),
        ])
        guard case .written(let outcomes, _, _) = results[0] else { return XCTFail("\(results[0])") }
        XCTAssertEqual(outcomes.first??.storedSequence, 1)
        guard case .failed = results[1] else { return XCTFail("\(results[1])") }
        XCTAssertEqual(results[2], .chatNotFound)
        let badHistory = try await storage.history(chatID: bad.id, afterSequence: 0, limit: 10)
        XCTAssertEqual(badHistory, [], "the failing chat's part is rolled back whole")
        let badChat = try await storage.chat(id: bad.id)
        XCTAssertEqual(badChat.lastSequence, 0)
        let goodHistory = try await storage.history(chatID: good.id, afterSequence: 0, limit: 10)
        XCTAssertEqual(goodHistory.map(\.clientMessageID), ["a"], "the other chat's part stands")
        // Only what stands was queued for search.
        try await storage.makeDurable()
        let found = try await storage.search(words: "worda", userID: nil, chatID: nil, limit: 10)
        XCTAssertEqual(found.map(\.message.clientMessageID), ["a"])
        let rolledBack = try await storage.search(words: "wordb", userID: nil, chatID: nil, limit: 10)
        XCTAssertTrue(rolledBack.isEmpty, "the rolled-back chat left nothing in the index")
    }
}

extension StoreOutcome {
    /// The sequence a message was stored under now; nil for a duplicate or a conflict.
    var storedSequence: UInt64? {
        added?.sequence
    }
}

final class AcceptedMessagesTests: XCTestCase {
    func testARetryWaitsForTheFirstAppendAndGetsItsAnswer() async throws {
        let table = AcceptedMessages(capacity: 10)
        let key = AcceptedMessages.Key(deviceID: 1, clientMessageID: "m")
        let first = AcceptedMessages.Acceptance(serverMessageID: 100, chatID: 1, text: "t", acceptedAtMilliseconds: 5)
        guard case .claimed = await table.claim(key, first) else { return XCTFail() }
        let retry = Task { await table.claim(key, AcceptedMessages.Acceptance(serverMessageID: 200, chatID: 1, text: "t", acceptedAtMilliseconds: 6)) }
        try await Task.sleep(for: .milliseconds(50))
        table.finish(key, inLog: true)
        guard case .accepted(let answer) = await retry.value else { return XCTFail("the retry gets the first answer") }
        XCTAssertEqual(answer.serverMessageID, 100)
        XCTAssertEqual(answer.sequence, 0, "not stored yet")
        XCTAssertEqual(table.count, 1)
        table.settle(key, .stored(serverMessageID: 100, sequence: 7))
        XCTAssertEqual(table.count, 0, "stored: no longer waiting")
        guard case .accepted(let later) = await table.claim(key, first) else { return XCTFail("remembered after storing") }
        XCTAssertEqual(later.sequence, 7)
        XCTAssertTrue(later.matches(chatID: 1, text: "t"))
        XCTAssertFalse(later.matches(chatID: 1, text: "other"))
    }

    func testRememberedStoredMessagesAreBounded() async {
        let table = AcceptedMessages(capacity: 10, storedCapacity: 3)
        for number in 0..<5 {
            let key = AcceptedMessages.Key(deviceID: 1, clientMessageID: "m\(number)")
            guard case .claimed = await table.claim(key, .init(serverMessageID: UInt64(number), chatID: 1, text: "t", acceptedAtMilliseconds: 0)) else { return XCTFail() }
            table.finish(key, inLog: true)
        }
        // Settled as a consumer settles a stored batch: in one call, oldest first.
        table.settle((0..<5).map { number in
            (AcceptedMessages.Key(deviceID: 1, clientMessageID: "m\(number)"), AcceptedMessages.Settlement.stored(serverMessageID: UInt64(number), sequence: UInt64(number + 1)))
        })
        XCTAssertEqual(table.count, 0)
        // The two oldest are forgotten: claiming them again is a fresh claim.
        guard case .claimed = await table.claim(.init(deviceID: 1, clientMessageID: "m0"), .init(serverMessageID: 9, chatID: 1, text: "t", acceptedAtMilliseconds: 0)) else { return XCTFail("forgotten") }
        guard case .accepted = await table.claim(.init(deviceID: 1, clientMessageID: "m4"), .init(serverMessageID: 9, chatID: 1, text: "t", acceptedAtMilliseconds: 0)) else { return XCTFail("remembered") }
    }

    func testAFailedAppendFreesTheClaimAndTheBoundHolds() async {
        let table = AcceptedMessages(capacity: 1)
        let key = AcceptedMessages.Key(deviceID: 1, clientMessageID: "m")
        let acceptance = AcceptedMessages.Acceptance(serverMessageID: 1, chatID: 1, text: "t", acceptedAtMilliseconds: 0)
        guard case .claimed = await table.claim(key, acceptance) else { return XCTFail() }
        guard case .full = await table.claim(.init(deviceID: 2, clientMessageID: "m"), acceptance) else { return XCTFail("bound of 1") }
        table.finish(key, inLog: false)
        guard case .claimed = await table.claim(key, acceptance) else { return XCTFail("free again") }
        // Stored before the append's answer came back: remembered as stored at `finish`.
        table.settle(key, .stored(serverMessageID: 1, sequence: 3))
        table.finish(key, inLog: true)
        XCTAssertEqual(table.count, 0)
        guard case .accepted(let stored) = await table.claim(key, acceptance) else { return XCTFail() }
        XCTAssertEqual(stored.sequence, 3)

        // Refused before the append's answer came back: forgotten at `finish`, not parked.
        let refusedKey = AcceptedMessages.Key(deviceID: 5, clientMessageID: "r")
        guard case .claimed = await table.claim(refusedKey, acceptance) else { return XCTFail() }
        table.settle(refusedKey, .refused)
        table.finish(refusedKey, inLog: true)
        XCTAssertEqual(table.count, 0, "a refused message does not hold a place")
        guard case .claimed = await table.claim(refusedKey, acceptance) else { return XCTFail("a retry of a refused message is a fresh claim") }
    }
}

final class DedupFilterTests: XCTestCase {
    func testEveryInsertedKeyIsFoundAndFewOthersAre() {
        let filter = DedupFilter(bits: 1 << 16)
        for number in 0..<1_000 { filter.insert(deviceID: UInt64(number % 7), clientMessageID: "m\(number)") }
        for number in 0..<1_000 { XCTAssertTrue(filter.mightContain(deviceID: UInt64(number % 7), clientMessageID: "m\(number)")) }
        // 1,000 keys in 65,536 bits with 7 hashes: about 1 in 10^7 false positives expected.
        let strangers = (0..<1_000).filter { filter.mightContain(deviceID: 99, clientMessageID: "m\($0)") }.count
        XCTAssertLessThan(strangers, 20, "the same ids from another device are other keys")
    }

    /// Inserts from several threads at once, into words they share: no bit is lost (the same
    /// keys inserted from one thread set exactly the same bits).
    func testConcurrentInsertsAreAllKept() {
        let concurrent = DedupFilter(bits: 1 << 16, hashCount: 3)
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for number in 0..<2_000 { concurrent.insert(deviceID: UInt64(thread), clientMessageID: "k\(number)") }
        }
        let sequential = DedupFilter(bits: 1 << 16, hashCount: 3)
        for thread in 0..<8 {
            for number in 0..<2_000 { sequential.insert(deviceID: UInt64(thread), clientMessageID: "k\(number)") }
        }
        XCTAssertGreaterThan(sequential.bitsSet, 20_000, "most bits still clear: a lost bit would show")
        XCTAssertEqual(concurrent.bitsSet, sequential.bitsSet)
    }
}

final class ServerConfigurationTests: XCTestCase {
    func testFileThenEnvironmentThenValidation() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("courier-cfg-\(UUID().uuidString).json").path
        try Data(#"{"coapPort": 6000, "nodeID": 7}"#.utf8).write(to: URL(fileURLWithPath: path))
        var configuration = try ServerConfiguration.load(file: path)
        XCTAssertEqual(configuration.coapPort, 6000)
        XCTAssertEqual(configuration.httpPort, 8081, "unnamed settings keep their defaults")
        try configuration.apply(environment: ["COURIER_COAP_PORT": "7000", "COURIER_DATA_DIRECTORY": "/tmp/x", "COURIER_UNSAFE_NO_SYNC": "true"])
        XCTAssertEqual(configuration.coapPort, 7000)
        XCTAssertEqual(configuration.dataDirectory, "/tmp/x")
        XCTAssertTrue(configuration.unsafeNoSync)
        XCTAssertTrue(configuration.batchScheduling, "on by default")
        try configuration.apply(environment: ["COURIER_BATCH_SCHEDULING": "false"])
        XCTAssertFalse(configuration.batchScheduling)
        XCTAssertThrowsError(try configuration.apply(environment: ["COURIER_BATCH_SCHEDULING": "sometimes"]))
        XCTAssertThrowsError(try configuration.apply(environment: ["COURIER_COAP_PORT": "many"]))
        XCTAssertNil(configuration.partitions, "unset: the data directory's own partition count")
        XCTAssertNil(configuration.log.partitionCount)
        try configuration.apply(environment: ["COURIER_PARTITIONS": "8"])
        XCTAssertEqual(configuration.log.partitionCount, 8)
        configuration.partitions = 2_000
        XCTAssertThrowsError(try configuration.validate()) { XCTAssertTrue("\($0)".contains("partitions")) }
        configuration.partitions = nil
        XCTAssertEqual(configuration.consumers.storeLinger, .milliseconds(5), "the store's linger by default")
        try configuration.apply(environment: ["COURIER_STORE_LINGER_MS": "0"])
        XCTAssertEqual(configuration.consumers.storeLinger, .zero)
        configuration.storeLingerMs = 5000
        XCTAssertThrowsError(try configuration.validate()) { XCTAssertTrue("\($0)".contains("storeLingerMs")) }
        configuration.storeLingerMs = 5
        configuration.nodeID = 5000
        XCTAssertThrowsError(try configuration.validate()) { XCTAssertTrue("\($0)".contains("nodeID")) }

        try Data(#"{"coapPrt": 1}"#.utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try ServerConfiguration.load(file: path)) { XCTAssertTrue("\($0)".contains("unknown setting 'coapPrt'"), "\($0)") }
    }
}
