@testable import CourierActors
@testable import CourierCore
@testable import CourierIngest
import CourierLog
@testable import CourierSQLite
import Foundation
import Logging
import Synchronization
import XCTest

/// The consumers' durability point: stores commit without a sync, and an offset moves only
/// after a sync that began once everything below it was stored, shared by every partition.
final class ChatConsumersDurabilityTests: XCTestCase {
    /// What happened, in order, between the consumers, the store and the log.
    enum Event: Equatable {
        case stored(serverMessageIDs: [UInt64])
        case durableStarted, durableEnded
        case committed([Int: UInt64])
    }

    final class Journal: Sendable {
        let events = Mutex<[Event]>([])
        let failDurability = Mutex(false)
        /// The threads the consumers' store calls came from.
        let storeThreads = Mutex<Set<String>>([])
        func note(_ event: Event) { events.withLock { $0.append(event) } }
        var all: [Event] { events.withLock { $0 } }
    }

    /// The real SQLite store, noting each batch it stored and each durability point.
    struct RecordingStore: ChatBatchStore {
        let inner: SQLiteStorage
        let journal: Journal

        func storeBatch(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
            let thread = currentThreadName()
            journal.storeThreads.withLock { _ = $0.insert(thread) }
            let results = try await inner.storeBatch(writes)
            journal.note(.stored(serverMessageIDs: writes.flatMap { $0.messages.map(\.serverMessageID) }))
            return results
        }

        func makeDurable() async throws(StorageError) {
            journal.note(.durableStarted)
            if journal.failDurability.withLock({ $0 }) { throw .unavailable("test: the sync fails") }
            try await inner.makeDurable()
            journal.note(.durableEnded)
        }

        var executor: (any TaskExecutor)? { inner.executor }
    }

    /// The real log, noting each offset commit.
    struct RecordingLog: MessageLog {
        let inner: EmbeddedLog
        let journal: Journal
        var partitionCount: Int { inner.partitionCount }
        func partition(forUser userID: UInt64) -> Int { inner.partition(forUser: userID) }
        func append(_ payload: [UInt8], partition: Int) async throws(LogAppendError) -> UInt64 { try await inner.append(payload, partition: partition) }
        func read(partition: Int, from offset: UInt64, maxBytes: Int) async throws(LogReadError) -> [LogRecord] {
            try await inner.read(partition: partition, from: offset, maxBytes: maxBytes)
        }
        func durableNextOffset(partition: Int) async -> UInt64 { await inner.durableNextOffset(partition: partition) }
        func waitForRecords(partition: Int, at offset: UInt64, unless interrupted: () -> Bool) async {
            await inner.waitForRecords(partition: partition, at: offset, unless: interrupted)
        }
        func interruptWaits() { inner.interruptWaits() }
        func committedOffset(group: String, partition: Int) async throws(LogIOError) -> UInt64 {
            try await inner.committedOffset(group: group, partition: partition)
        }
        func commit(group: String, offsets: [Int: UInt64]) async throws(LogIOError) {
            journal.note(.committed(offsets))
            try await inner.commit(group: group, offsets: offsets)
        }
    }

    /// A SQLite store and a log of `partitions` in a directory of their own, which goes (the
    /// log closed) when `test` ends.
    static func storeAndLog(partitions: Int, for test: XCTestCase) throws -> (SQLiteStorage, EmbeddedLog) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-consumers-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let storage = try SQLiteStorage(path: "\(directory)/db.sqlite3")
        var logConfiguration = EmbeddedLog.Configuration()
        logConfiguration.partitionCount = partitions
        let log = try EmbeddedLog(directory: "\(directory)/log", configuration: logConfiguration)
        test.addTeardownBlock {
            log.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
        return (storage, log)
    }

    /// Consumers of `log` storing into `storage` through a `RecordingStore`.
    static func consumers(of log: any MessageLog, storage: SQLiteStorage, journal: Journal, configuration: ChatConsumers.Configuration) -> ChatConsumers {
        ChatConsumers(
            log: log, storage: storage, store: RecordingStore(inner: storage, journal: journal), live: LiveDevices(), accepted: AcceptedMessages(),
            dedupFilter: DedupFilter(bits: 1 << 16), metrics: ServerMetrics(partitionCount: log.partitionCount), configuration: configuration, logger: Logger(label: "test")
        )
    }

    func testOffsetsMoveOnlyAfterASharedSyncThatFollowsTheirStores() async throws {
        let (storage, embedded) = try Self.storeAndLog(partitions: 4, for: self)
        let journal = Journal()
        let log = RecordingLog(inner: embedded, journal: journal)

        // Eight chats of one user each, spread over the partitions.
        var senders: [(user: UInt64, device: UInt64, chat: UInt64)] = []
        for index in 0..<8 {
            let user = try await storage.createUser(name: "u\(index)")
            let device = try await storage.createDevice(userID: user.id, name: "d")
            let chat = try await storage.createChat(name: "c\(index)", memberIDs: [user.id])
            senders.append((user.id, device.id, chat.id))
        }
        var configuration = ChatConsumers.Configuration()
        configuration.offsetCommitInterval = .milliseconds(100)
        let consumers = Self.consumers(of: log, storage: storage, journal: journal, configuration: configuration)
        let running = Task { await consumers.run() }

        // 400 messages over about 2 s, so that many batches are stored between syncs.
        let ids = MessageIDGenerator(nodeID: 0)
        var offsets: [UInt64: (partition: Int, offset: UInt64)] = [:]
        for round in 0..<50 {
            for sender in senders {
                let message = AcceptedMessage(
                    serverMessageID: ids.next(), chatID: sender.chat, senderUserID: sender.user, senderDeviceID: sender.device,
                    clientMessageID: "\(round)", text: "m\(round)", clientSentAtMs: 0, acceptedAtMs: 0
                )
                let partition = log.partition(forUser: sender.user)
                offsets[message.serverMessageID] = (partition, try await log.append(message.serializedBytes(), partition: partition))
            }
            try await Task.sleep(for: .milliseconds(40))
        }
        try await waitUntil("every offset committed", timeout: .seconds(20)) { await self.committedEverything(embedded, offsets) }

        // A failing sync holds every offset where it is, while stores go on.
        journal.failDurability.withLock { $0 = true }
        let heldAt = try await (0..<4).asyncMap { try await embedded.committedOffset(group: ChatConsumers.group, partition: $0) }
        let late = senders[0]
        let message = AcceptedMessage(
            serverMessageID: ids.next(), chatID: late.chat, senderUserID: late.user, senderDeviceID: late.device, clientMessageID: "late", text: "late", clientSentAtMs: 0, acceptedAtMs: 0
        )
        let latePartition = log.partition(forUser: late.user)
        offsets[message.serverMessageID] = (latePartition, try await log.append(message.serializedBytes(), partition: latePartition))
        try await waitUntil("the late message stored") { try await storage.history(chatID: late.chat, afterSequence: 50, limit: 10).count == 1 }
        try await Task.sleep(for: .milliseconds(500))
        let whileFailing = try await (0..<4).asyncMap { try await embedded.committedOffset(group: ChatConsumers.group, partition: $0) }
        XCTAssertEqual(whileFailing, heldAt, "no offset moves while the store cannot be made durable")
        journal.failDurability.withLock { $0 = false }
        try await waitUntil("every offset committed once the sync works") { await self.committedEverything(embedded, offsets) }

        consumers.stop()
        await running.value

        // Every commit comes after a sync that began once the records below it were stored.
        var stored: Set<UInt64> = []
        var storedAtSyncStart: Set<UInt64> = []
        var covered: Set<UInt64> = []
        var syncs = 0
        var batches = 0
        for event in journal.all {
            switch event {
            case .stored(let ids):
                stored.formUnion(ids)
                batches += 1
            case .durableStarted:
                storedAtSyncStart = stored
            case .durableEnded:
                covered = storedAtSyncStart
                syncs += 1
            case .committed(let moved):
                for (id, place) in offsets where moved[place.partition].map({ place.offset < $0 }) ?? false {
                    XCTAssertTrue(covered.contains(id), "message \(id) at offset \(place.offset) of partition \(place.partition) was committed before a sync covered it")
                }
            }
        }
        XCTAssertEqual(stored.count, offsets.count, "every message was stored")
        // The consumers run on SQLite's writer thread, so a store transaction costs no hop there.
        XCTAssertEqual(journal.storeThreads.withLock { $0 }, ["courier-sqlite"])
        XCTAssertGreaterThan(batches, syncs * 2, "the partitions' batches share syncs (\(batches) batches, \(syncs) syncs)")
        print("consumers: \(batches) stored batches, \(syncs) syncs")
    }

    func testIdleConsumersKeepNoTimerWakeOnTheNextMessageAndStop() async throws {
        let (storage, log) = try Self.storeAndLog(partitions: 4, for: self)
        let user = try await storage.createUser(name: "u")
        let device = try await storage.createDevice(userID: user.id, name: "d")
        let chat = try await storage.createChat(name: "c", memberIDs: [user.id])
        var configuration = ChatConsumers.Configuration()
        configuration.offsetCommitInterval = .milliseconds(100)
        let consumers = Self.consumers(of: log, storage: storage, journal: Journal(), configuration: configuration)
        let stopped = Mutex(false)
        let running = Task {
            await consumers.run()
            stopped.withLock { $0 = true }
        }
        let thread = try XCTUnwrap(storage.executor as? DedicatedThreadExecutor)
        let ids = MessageIDGenerator(nodeID: 0)
        let partition = log.partition(forUser: user.id)

        for round in 1...2 {
            let message = AcceptedMessage(
                serverMessageID: ids.next(), chatID: chat.id, senderUserID: user.id, senderDeviceID: device.id,
                clientMessageID: "\(round)", text: "m\(round)", clientSentAtMs: 0, acceptedAtMs: 0
            )
            let offset = try await log.append(message.serializedBytes(), partition: partition)
            // After an idle spell the consumer's wait and the committer wake for the new message.
            try await waitUntil("message \(round) stored and its offset committed") {
                try await log.committedOffset(group: ChatConsumers.group, partition: partition) > offset
            }
            // Nothing more to commit: the committer sleeps on no timer (it slept every 100 ms).
            try await waitUntil("no timer on SQLite's thread", timeout: .seconds(3)) { thread.sleeperCount == 0 }
            try await Task.sleep(for: .milliseconds(300))
            XCTAssertEqual(thread.sleeperCount, 0, "idle consumers set no timer")
            XCTAssertEqual(log.waiterCount(partition: partition), 1, "the consumer waits for records")
        }

        // The consumers wait for records without a timeout; the stop ends the waits.
        consumers.stop()
        try await waitUntil("the consumers stopped", timeout: .seconds(5)) { stopped.withLock { $0 } }
        await running.value
    }

    private func committedEverything(_ log: EmbeddedLog, _ offsets: [UInt64: (partition: Int, offset: UInt64)]) async -> Bool {
        for partition in 0..<4 {
            let end = offsets.values.filter { $0.partition == partition }.map { $0.offset + 1 }.max() ?? 0
            guard let committed = try? await log.committedOffset(group: ChatConsumers.group, partition: partition), committed >= end else { return false }
        }
        return true
    }
}

extension Sequence {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
