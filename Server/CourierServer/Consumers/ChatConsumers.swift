import CourierLog
import CourierProtocol
import CourierStorage
import Foundation
import Logging
import NIOConcurrencyHelpers

/// One consumer per log partition, in consumer group "chats": reads accepted messages from the
/// committed offset, hands each to its chat's writer, and commits the offset only once every
/// record below it is stored and the storage is durable. A crash replays from the committed
/// offset; the chats' dedup keys make the replay a no-op.
///
/// Within a batch, chats are processed concurrently and each chat's records in log order, so
/// one sender's messages keep their order. A chat whose store fails (storage busy, full, or
/// failing for that chat alone) is parked: its messages, and every later one of that chat, wait
/// in `ParkedChats` while the other chats keep flowing, and a retrier stores them with backoff,
/// each time through a Chat actor freshly loaded from storage. The offset never moves past a
/// parked message, so a crash replays it.
public final class ChatConsumers: Sendable {
    public static let group = "chats"

    public struct Configuration: Sendable {
        /// Bytes read from a partition per batch.
        public var batchBytes = 256 * 1024
        /// Messages of one chat stored in one transaction.
        public var maxMessagesPerTransaction = 512
        /// How long an idle consumer sleeps before checking for shutdown.
        public var idleWait: Duration = .milliseconds(200)
        public var maxRetryDelay: Duration = .seconds(1)
        /// Messages one partition may hold parked behind failing chats; at the bound the
        /// partition stops reading until the retrier stores some (the log keeps the rest).
        public var maxParkedMessages = 10_000
        /// The shortest time between two offset commits of a partition. Each commit costs two
        /// syncs; one that comes late only makes a crash replay more records, which the chats'
        /// dedup keys turn into no-ops. The end of consuming always commits.
        public var offsetCommitInterval: Duration = .milliseconds(250)
        public init() {}
    }

    let log: any MessageLog
    let storage: any CourierStorage
    let chats: ShardRegion<ChatEntity>
    let users: ShardRegion<UserEntity>
    let accepted: AcceptedMessages
    let dedupFilter: DedupFilter
    let metrics: ServerMetrics
    let configuration: Configuration
    let logger: Logger
    /// Test faults only: nil in every real server.
    let faults: FaultInjector?
    private let startupTargets = NIOLockedValueBox<[Int: UInt64]>([:])
    private let positions = NIOLockedValueBox<[Int: UInt64]>([:])
    private let stopping = NIOLockedValueBox(false)

    public init(log: any MessageLog, storage: any CourierStorage, chats: ShardRegion<ChatEntity>, users: ShardRegion<UserEntity>, accepted: AcceptedMessages, dedupFilter: DedupFilter, metrics: ServerMetrics, configuration: Configuration = Configuration(), logger: Logger, faults: FaultInjector? = nil) {
        self.dedupFilter = dedupFilter
        self.faults = faults
        self.log = log
        self.storage = storage
        self.chats = chats
        self.users = users
        self.accepted = accepted
        self.metrics = metrics
        self.configuration = configuration
        self.logger = logger
    }

    /// True once every partition has processed what its log held when consuming began: from
    /// then on a retry of any message finds it in storage or in flight, so the gateway may open.
    public var caughtUp: Bool {
        let targets = startupTargets.withLockedValue { $0 }
        let positions = positions.withLockedValue { $0 }
        guard targets.count == log.partitionCount else { return false }
        return targets.allSatisfy { partition, target in (positions[partition] ?? 0) >= target }
    }

    /// Waits until `caughtUp`.
    public func waitUntilCaughtUp() async {
        while !caughtUp && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
    }

    /// Fills the gateway's dedup filter from storage, then consumes every partition until
    /// `stop()`; each finishes and commits its current batch.
    public func run() async {
        let filter = dedupFilter
        await retrying("load the dedup keys") {
            try await self.storage.forEachDedupKey { filter.insert(deviceID: $0, clientMessageID: $1) }
        }
        await withTaskGroup(of: Void.self) { group in
            for partition in 0..<log.partitionCount {
                group.addTask { await self.consume(partition: partition) }
            }
        }
    }

    /// Asks every consumer to commit what it has and return.
    public func stop() {
        stopping.withLockedValue { $0 = true }
    }

    private var isStopping: Bool { stopping.withLockedValue { $0 } }

    private func consume(partition: Int) async {
        var offset: UInt64
        do {
            offset = try await log.committedOffset(group: Self.group, partition: partition)
        } catch {
            logger.critical("cannot read the committed offset; partition not consumed", metadata: ["partition": "\(partition)", "error": "\(error)"])
            return
        }
        let target = await log.durableNextOffset(partition: partition)
        if target > offset || offset > 0 {
            logger.info("consumer resumes", metadata: ["partition": "\(partition)", "offset": "\(offset)", "logEnd": "\(target)"])
        }
        startupTargets.withLockedValue { $0[partition] = target }
        positions.withLockedValue { $0[partition] = offset }

        let parked = ParkedChats(resumingAt: offset, limit: configuration.maxParkedMessages)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.retryParked(parked, partition: partition) }
            await self.read(partition: partition, from: offset, parked: parked)
            group.cancelAll()
        }
    }

    /// Reads the partition batch after batch: stores what it can, parks what fails, and
    /// commits the offset below which everything is stored.
    private func read(partition: Int, from start: UInt64, parked: ParkedChats) async {
        var offset = start
        var committed = start
        var lastCommit = ContinuousClock.now
        func commitProgress(evenIfRecent: Bool = false) async -> Bool {
            let next = parked.committable
            // Processed means stored durably, which is what catching up waits for.
            positions.withLockedValue { $0[partition] = next }
            guard next > committed, evenIfRecent || ContinuousClock.now - lastCommit >= configuration.offsetCommitInterval else { return true }
            faults?.beforeCommit()
            guard await retrying("commit offset \(next) of partition \(partition)", { try await self.log.commit(group: Self.group, partition: partition, offset: next) }) != nil else { return false }
            committed = next
            lastCommit = ContinuousClock.now
            metrics.countOffsetCommit()
            metrics.recordLag(partition: partition, records: await log.durableNextOffset(partition: partition) - next)
            return true
        }

        while !isStopping && !Task.isCancelled {
            if parked.isFull {
                guard await commitProgress() else { return }
                try? await Task.sleep(for: configuration.idleWait)
                continue
            }
            let records: [LogRecord]
            do {
                records = try await log.read(partition: partition, from: offset, maxBytes: configuration.batchBytes)
            } catch {
                logger.error("log read failed", metadata: ["partition": "\(partition)", "offset": "\(offset)", "error": "\(error)"])
                try? await Task.sleep(for: configuration.maxRetryDelay)
                continue
            }
            guard let last = records.last else {
                guard await commitProgress() else { return }
                await log.waitForRecords(partition: partition, at: offset, timeout: configuration.idleWait)
                continue
            }
            // Cancelled midway: nothing is committed, so the batch is replayed next time.
            guard let settled = await process(records, partition: partition, parked: parked) else { return }
            guard await finish(settled, partition: partition, parked: parked) else { return }
            offset = last.offset + 1
            guard await commitProgress() else { return }
        }
        _ = await commitProgress(evenIfRecent: true)
    }

    /// Makes stored messages durable, then tells the gateway and the members, then marks their
    /// records processed. False if cancelled.
    private func finish(_ settled: Settled, partition: Int, parked: ParkedChats) async -> Bool {
        if !settled.stored.isEmpty || !settled.settlements.isEmpty {
            // Durable before anyone hears of a sequence number: a power cut must not let a
            // replay number these messages differently from what devices and retries were told.
            guard await retrying("sync storage for partition \(partition)", { try await self.storage.makeDurable() }) != nil else { return false }
        }
        for (key, settlement) in settled.settlements { accepted.settle(key, settlement) }
        for (chatID, messages) in settled.stored { await fanOut(messages, chatID: chatID) }
        parked.markProcessed(settled.processedOffsets)
        return true
    }

    /// Stores parked chats when their backoff is due, each through a Chat actor loaded afresh
    /// from storage, until they are empty again.
    private func retryParked(_ parked: ParkedChats, partition: Int) async {
        while !isStopping && !Task.isCancelled {
            guard let (chatID, waiting) = parked.nextDue() else {
                try? await Task.sleep(for: min(parked.timeUntilNextDue ?? configuration.idleWait, configuration.idleWait))
                continue
            }
            // Whatever state the failed actor held is suspect: the next one starts from storage.
            await chats.evict(chatID)
            var settled = Settled()
            var storedCount = 0
            var failure: String?
            for part in Self.transactions(waiting.map(\.message), limit: configuration.maxMessagesPerTransaction, copies: parked.copies) {
                let outcome = await store(part, chatID: chatID, copies: parked.copies)
                guard case .settled(let stored) = outcome else {
                    if case .failed(let reason) = outcome { failure = reason }
                    break
                }
                settled.settlements += stored.settlements
                settled.stored += stored.stored
                settled.processedOffsets += waiting[storedCount..<storedCount + part.count].map(\.offset)
                storedCount += part.count
            }
            if Task.isCancelled { return }
            guard await finish(settled, partition: partition, parked: parked) else { return }
            let delay = parked.stored(storedCount, of: chatID, failed: failure != nil, maxDelay: configuration.maxRetryDelay)
            if let failure {
                logger.warning("chat still failing; retrying with backoff", metadata: [
                    "chat": "\(chatID)", "partition": "\(partition)", "waiting": "\(waiting.count - storedCount)", "delay": "\(delay)", "error": "\(failure)",
                ])
            } else if !parked.isParked(chatID) {
                logger.info("chat recovered; its parked messages are stored", metadata: ["chat": "\(chatID)", "partition": "\(partition)"])
            }
        }
    }

    /// What a stored batch means for the gateway's table and for the members.
    private struct Settled: Sendable {
        var settlements: [(AcceptedMessages.Key, AcceptedMessages.Settlement)] = []
        /// Newly stored messages per chat, in sequence order.
        var stored: [(UInt64, [StoredMessage])] = []
        /// The log records these settle (stored, refused or skipped): the offset may pass them.
        var processedOffsets: [UInt64] = []
    }

    /// Stores a batch: chats concurrently, each chat's records in log order. A chat that is
    /// parked, or whose store fails now, has its messages parked instead. Nil if cancelled.
    private func process(_ records: [LogRecord], partition: Int, parked: ParkedChats) async -> Settled? {
        var byChat: [UInt64: [ParkedChats.Entry]] = [:]
        var order: [UInt64] = []
        func add(_ entries: ParkedChats.Entry...) {
            let chatID = entries[0].message.chatID
            if byChat[chatID] == nil { order.append(chatID) }
            byChat[chatID, default: []] += entries
        }
        var skipped = Settled()
        for record in records {
            let message: AcceptedMessage
            do {
                message = try AcceptedMessage(serializedBytes: record.payload)
            } catch {
                // Only the gateway writes the log, so this is a bug or damage; skipping it is
                // the only way forward, and it is said loudly.
                logger.error("undecodable log record skipped", metadata: ["partition": "\(partition)", "offset": "\(record.offset)", "error": "\(error)"])
                skipped.processedOffsets.append(record.offset)
                continue
            }
            switch faults?.next() ?? .unaffected {
            case .unaffected:
                add(.init(offset: record.offset, message: message))
            case .drop:
                logger.warning("TEST FAULT: acknowledged message dropped, never stored nor pushed", metadata: [
                    "chat": "\(message.chatID)", "device": "\(message.senderDeviceID)", "clientMessageID": "\(message.clientMessageID)",
                ])
                skipped.settlements.append((AcceptedMessages.Key(deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID), .refused))
                skipped.processedOffsets.append(record.offset)
            case .duplicate(let copyID):
                logger.warning("TEST FAULT: message stored twice", metadata: [
                    "chat": "\(message.chatID)", "device": "\(message.senderDeviceID)", "clientMessageID": "\(message.clientMessageID)",
                ])
                var copy = message
                copy.serverMessageID = copyID
                parked.addCopy(copyID)
                add(.init(offset: record.offset, message: message), .init(offset: record.offset, message: copy))
            }
        }
        // A parked chat's new messages queue behind its parked ones, keeping the chat's order.
        let flowing = order.filter { !parked.appendIfParked($0, byChat[$0]!) }
        let copies = parked.copies
        return await withTaskGroup(of: Settled?.self) { group in
            for chatID in flowing {
                let entries = byChat[chatID]!
                group.addTask {
                    var settled = Settled()
                    var done = 0
                    for part in Self.transactions(entries.map(\.message), limit: self.configuration.maxMessagesPerTransaction, copies: copies) {
                        switch await self.store(part, chatID: chatID, copies: copies) {
                        case .cancelled:
                            return nil
                        case .failed(let reason):
                            self.logger.warning("chat store failed; chat parked, other chats go on", metadata: [
                                "chat": "\(chatID)", "partition": "\(partition)", "messages": "\(entries.count - done)", "error": "\(reason)",
                            ])
                            parked.park(chatID, Array(entries[done...]))
                            return settled
                        case .settled(let stored):
                            settled.settlements += stored.settlements
                            settled.stored += stored.stored
                            settled.processedOffsets += entries[done..<done + part.count].map(\.offset)
                            done += part.count
                        }
                    }
                    return settled
                }
            }
            var all = skipped
            for await part in group {
                guard let part else { return nil }
                all.settlements += part.settlements
                all.stored += part.stored
                all.processedOffsets += part.processedOffsets
            }
            return all
        }
    }

    /// Splits one chat's messages into transactions of at most `limit`; a test fault's copy
    /// stays in the same transaction as the message it copies.
    private static func transactions(_ messages: [AcceptedMessage], limit: Int, copies: Set<UInt64>) -> [[AcceptedMessage]] {
        var parts: [[AcceptedMessage]] = []
        var start = 0
        while start < messages.count {
            var end = min(messages.count, start + limit)
            if end < messages.count, copies.contains(messages[end].serverMessageID) { end += 1 }
            parts.append(Array(messages[start..<end]))
            start = end
        }
        return parts
    }

    private enum StoreResult: Sendable {
        case settled(Settled)
        /// Storage failed for a passing reason; nothing of these messages was stored.
        case failed(String)
        case cancelled
    }

    /// Stores messages of one chat in log order, in one transaction; one attempt.
    private func store(_ messages: [AcceptedMessage], chatID: UInt64, copies: Set<UInt64>) async -> StoreResult {
        enum Attempt: Sendable { case outcomes([ChatEntity.Outcome]), chatGone, rejected(String) }
        if Task.isCancelled { return .cancelled }
        let attempt: Attempt
        do {
            attempt = .outcomes(try await chats.withEntity(chatID) { try await $0.store(messages, copies: copies) })
        } catch StorageError.notFound {
            attempt = .chatGone
        } catch StorageError.rejected(let reason) {
            // The database refuses these as they are: retrying cannot help.
            attempt = .rejected(reason)
        } catch {
            return Task.isCancelled ? .cancelled : .failed("\(error)")
        }
        var settled = Settled()
        let outcomes: [ChatEntity.Outcome?]
        switch attempt {
        case .outcomes(let found):
            outcomes = found
        case .chatGone:
            logger.warning("chat no longer exists; messages not stored", metadata: ["chat": "\(chatID)", "count": "\(messages.count)"])
            outcomes = messages.map { _ in nil }
        case .rejected(let reason):
            logger.critical("storage refuses these messages; they are skipped", metadata: [
                "chat": "\(chatID)", "serverMessageIDs": "\(messages.map(\.serverMessageID))", "reason": "\(reason)",
            ])
            outcomes = messages.map { _ in nil }
        }
        var stored: [StoredMessage] = []
        for (message, outcome) in zip(messages, outcomes) {
            if copies.contains(message.serverMessageID) {
                // A test fault's copy: pushed like any message, but its original alone is settled.
                if case .stored(let copy)? = outcome { stored.append(copy) }
                continue
            }
            let key = AcceptedMessages.Key(deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID)
            switch outcome {
            case .stored(let message)?:
                // Into the filter before the gateway's table lets go of it, so a retry always finds it.
                dedupFilter.insert(deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID)
                stored.append(message)
                settled.settlements.append((key, .stored(serverMessageID: message.serverMessageID, sequence: message.sequence)))
            case .duplicate(let existing)?:
                settled.settlements.append((key, .stored(serverMessageID: existing.serverMessageID, sequence: existing.sequence)))
            case .conflict(let existing)?:
                logger.warning("client message id reused for a different message; not stored", metadata: [
                    "device": "\(message.senderDeviceID)", "clientMessageID": "\(message.clientMessageID)", "stored": "\(existing.serverMessageID)",
                ])
                settled.settlements.append((key, .refused))
            case .notMember?:
                logger.warning("sender left the chat before the message was stored; not stored", metadata: ["chat": "\(chatID)", "user": "\(message.senderUserID)"])
                settled.settlements.append((key, .refused))
            case nil:
                settled.settlements.append((key, .refused))
            }
        }
        if !stored.isEmpty { settled.stored.append((chatID, stored)) }
        return .settled(settled)
    }

    /// Hands newly stored messages of one chat to every member's User actor (and on to their
    /// devices), one call per member for the whole batch. A member that cannot be reached now
    /// still gets the messages by sync from storage.
    private func fanOut(_ messages: [StoredMessage], chatID: UInt64) async {
        let members: Set<UInt64>
        do {
            members = try await chats.withEntity(chatID) { await $0.currentMembers() }
        } catch {
            return
        }
        for member in members {
            do {
                try await users.withEntity(member) { try await $0.deliver(messages) }
            } catch {
                logger.debug("hand-off to user failed", metadata: ["user": "\(member)", "error": "\(error)"])
            }
        }
    }

    /// Runs `body` until it succeeds, with doubling delays up to the maximum; nil once the task
    /// is cancelled. A consumer never skips a record because storage was briefly unavailable.
    private func retrying<T: Sendable>(_ what: String, _ body: @Sendable () async throws -> T) async -> T? {
        var delay: Duration = .milliseconds(10)
        while !Task.isCancelled {
            do {
                return try await body()
            } catch {
                if Task.isCancelled { return nil }
                logger.warning("retrying", metadata: ["what": "\(what)", "error": "\(error)", "delay": "\(delay)"])
                do { try await Task.sleep(for: delay) } catch { return nil }
                delay = min(delay * 2, configuration.maxRetryDelay)
            }
        }
        return nil
    }
}
