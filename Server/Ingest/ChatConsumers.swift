import CourierActors
import CourierCore
import CourierLog
import CourierProtocol
import Foundation
import Logging
import Synchronization

/// One consumer per log partition, in consumer group "chats": reads accepted messages from the
/// committed offset, hands each to its chat's writer, and an offset moves only once every
/// record below it is stored and the storage is durable. A crash replays from the committed
/// offset; the chats' dedup keys make the replay a no-op.
///
/// A batch is stored whole, every chat in it, in one transaction that the partitions share
/// (`ChatStoreWriter`), committed without a sync; each chat's records keep their log order, so
/// one sender's messages keep their order. The transaction is the single writer of each chat
/// in it: membership, deduplication and the next sequence are read and written inside it. A
/// chat whose store fails (storage busy, full, or failing for that chat alone) is parked: its
/// messages, and every later one of that chat, wait in `ParkedChats` while the other chats keep
/// flowing, and a retrier stores them with backoff. The offset never moves past a parked
/// message, so a crash replays it.
///
/// Durability is one point for every partition: `offsetCommitInterval` after something is
/// stored (and no more often) one committer makes what was stored durable
/// (`ChatBatchStore.makeDurable`: one sync for all the transactions since the last) and then
/// moves every partition's offset in one write. Until then the log holds the messages: a power
/// cut that takes the last transactions replays them, in the same order, so they get the same
/// sequence numbers.
///
/// Stored messages go to the live devices of the chat's members (`LiveDevices`), each message
/// encoded once for all of them; a member with no session costs nothing until it reconnects
/// and replays from its cursor.
public final class ChatConsumers: Sendable {
    public static let group = "chats"

    public struct Configuration: Sendable {
        /// Bytes read from a partition per batch.
        public var batchBytes = 256 * 1024
        /// How often a partition whose parked messages are at the bound looks again, and the
        /// longest the retrier sleeps before looking for newly parked chats.
        public var parkedPollInterval: Duration = .milliseconds(200)
        public var maxRetryDelay: Duration = .seconds(1)
        /// Messages one partition may hold parked behind failing chats; at the bound the
        /// partition stops reading until the retrier stores some (the log keeps the rest).
        public var maxParkedMessages = 10_000
        /// How long after something is stored (and how often at most) the stored messages are
        /// made durable and the offsets of every partition committed, together (three syncs).
        /// Nothing stored, no round. A commit that comes late only makes a crash
        /// replay more records, which the chats' dedup keys turn into no-ops. The end of
        /// consuming always commits.
        public var offsetCommitInterval: Duration = .milliseconds(250)
        /// A store transaction starts no sooner than this after the one before it started
        /// (`ChatStoreWriter`): at a few hundred messages a second, each came alone and paid a
        /// transaction, a wake of SQLite's thread and of every event loop its pushes went to.
        public var storeLinger: Duration = .milliseconds(5)
        public init() {}
    }

    let log: any MessageLog
    let storage: any ServerStorage
    package let writer: ChatStoreWriter
    let live: LiveDevices
    /// Where the Chat actors' receipts find what was just stored.
    let recent: RecentMessages?
    let accepted: AcceptedMessages
    let dedupFilter: DedupFilter
    let metrics: ServerMetrics
    let configuration: Configuration
    let logger: Logger
    private let startupTargets = Mutex<[Int: UInt64]>([:])
    private let positions = Mutex(Positions())
    private let stopping = Mutex(false)

    /// Writes go to `store` (by default `storage` itself; the test faults put a decorator here).
    package init(
        log: any MessageLog, storage: any ServerStorage, store: (any ChatBatchStore)? = nil, live: LiveDevices, recent: RecentMessages? = nil, accepted: AcceptedMessages,
        dedupFilter: DedupFilter, metrics: ServerMetrics, configuration: Configuration = Configuration(), logger: Logger
    ) {
        self.dedupFilter = dedupFilter
        self.log = log
        self.storage = storage
        self.writer = ChatStoreWriter(store: store ?? storage, linger: configuration.storeLinger)
        self.live = live
        self.recent = recent
        self.accepted = accepted
        self.metrics = metrics
        self.configuration = configuration
        self.logger = logger
    }

    /// True once every partition has processed what its log held when consuming began: from
    /// then on a retry of any message finds it in storage or in flight, so the gateway may open.
    public var caughtUp: Bool {
        let targets = startupTargets.withLock { $0 }
        let positions = positions.withLock { $0.reached }
        guard targets.count == log.partitionCount else { return false }
        return targets.allSatisfy { partition, target in (positions[partition] ?? 0) >= target }
    }

    /// Waits until `caughtUp`.
    public func waitUntilCaughtUp() async {
        while !caughtUp && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
    }

    /// Fills the gateway's dedup filter from storage, then consumes every partition until
    /// `stop()`; each finishes its current batch, and what they stored is committed.
    public func run() async {
        // On the store's writer thread when it has one: a batch's transaction then runs where
        // the consumer does, with no hop to that thread and back (two context switches).
        await withTaskExecutorPreference(writer.executor) { await consumeAll() }
    }

    private func consumeAll() async {
        let filter = dedupFilter
        await retrying("load the dedup keys") {
            try await self.storage.forEachDedupKey { filter.insert(deviceID: $0, clientMessageID: $1) }
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.commitPeriodically() }
            await withTaskGroup(of: Void.self) { partitions in
                for partition in 0..<log.partitionCount {
                    partitions.addTask { await self.consume(partition: partition) }
                }
            }
            group.cancelAll()
        }
        // Cancelled (not stopped): nothing more is committed, the next start replays.
        if !Task.isCancelled { _ = await commitOffsets() }
    }

    /// Per partition, the offset below which every record is stored (not yet durably) and the
    /// offset last committed; and the committer while it waits for the first to pass the second.
    private struct Positions {
        var reached: [Int: UInt64] = [:]
        /// Set by each partition's consumer as it starts, then moved by the committer alone.
        var committed: [Int: UInt64] = [:]
        var committerWaiting: CheckedContinuation<Void, Never>?

        var anyPastCommitted: Bool { reached.contains { $0.value > committed[$0.key] ?? 0 } }
    }

    private func commitPeriodically() async {
        while !Task.isCancelled {
            // Idle, the committer sleeps until a batch is stored: no timer for nothing to commit.
            await waitUntilStoredPastCommitted()
            // On the store's thread, where this task runs, when it has one (no dispatch timer).
            do { try await DedicatedThreadExecutor.sleep(for: configuration.offsetCommitInterval, on: writer.executor) } catch { return }
            guard await commitOffsets() else { return }
        }
    }

    /// Returns once some partition has stored past its committed offset, or when cancelled.
    private func waitUntilStoredPastCommitted() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let waiting = positions.withLock { positions in
                    // `finish` moves a position under this lock before it looks for a waiter.
                    guard !Task.isCancelled, !positions.anyPastCommitted else { return false }
                    positions.committerWaiting = continuation
                    return true
                }
                if !waiting { continuation.resume() }
            }
        } onCancel: {
            positions.withLock { positions in
                defer { positions.committerWaiting = nil }
                return positions.committerWaiting
            }?.resume()
        }
    }

    /// Makes everything stored so far durable, then moves every partition's offset that
    /// progressed, in one write. False if cancelled.
    private func commitOffsets() async -> Bool {
        // Read before the sync: the sync covers every transaction these positions count.
        let moved = positions.withLock { positions in positions.reached.filter { $0.value > positions.committed[$0.key] ?? 0 } }
        guard !moved.isEmpty else { return true }
        guard await retrying("make the stored messages durable", { try await self.writer.makeDurable() }) != nil,
              await retrying("commit offsets \(moved)", { try await self.log.commit(group: Self.group, offsets: moved) }) != nil
        else { return false }
        positions.withLock { $0.committed.merge(moved) { max($0, $1) } }
        metrics.countOffsetCommit()
        for (partition, offset) in moved {
            metrics.recordLag(partition: partition, records: await log.durableNextOffset(partition: partition) - offset)
        }
        return true
    }

    /// Asks every consumer to commit what it has and return.
    public func stop() {
        stopping.withLock { $0 = true }
        // Idle consumers wait for records without a timeout; this ends their waits.
        log.interruptWaits()
    }

    private var isStopping: Bool { stopping.withLock { $0 } }

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
        startupTargets.withLock { $0[partition] = target }
        positions.withLock { positions in
            positions.committed[partition] = offset
            positions.reached[partition] = offset
        }

        let parked = ParkedChats(resumingAt: offset, limit: configuration.maxParkedMessages)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.retryParked(parked, partition: partition) }
            await self.read(partition: partition, from: offset, parked: parked)
            group.cancelAll()
        }
    }

    /// Reads the partition batch after batch: stores what it can and parks what fails; the
    /// committer moves the offset below which everything is stored.
    private func read(partition: Int, from start: UInt64, parked: ParkedChats) async {
        var offset = start
        while !isStopping && !Task.isCancelled {
            if parked.isFull {
                try? await Task.sleep(for: configuration.parkedPollInterval)
                continue
            }
            // Each partition has one batch in flight: reading when the store's linger is over,
            // not before, puts what arrives during it in this batch, not in the one after.
            await writer.untilNextStart()
            let records: [LogRecord]
            do {
                records = try await log.read(partition: partition, from: offset, maxBytes: configuration.batchBytes)
            } catch {
                logger.error("log read failed", metadata: ["partition": "\(partition)", "offset": "\(offset)", "error": "\(error)"])
                try? await Task.sleep(for: configuration.maxRetryDelay)
                continue
            }
            guard let last = records.last else {
                await log.waitForRecords(partition: partition, at: offset) { isStopping }
                continue
            }
            // Cancelled midway: nothing is committed, so the batch is replayed next time.
            guard let settled = await process(records, partition: partition, parked: parked) else { return }
            guard await finish(settled, partition: partition, parked: parked) else { return }
            offset = last.offset + 1
        }
    }

    /// Tells the gateway and the members of what was stored (durably, by the writer), then
    /// marks the records processed. False if cancelled.
    private func finish(_ settled: Settled, partition: Int, parked: ParkedChats) async -> Bool {
        if Task.isCancelled { return false }
        accepted.settle(settled.settlements)
        await fanOut(settled.stored)
        parked.markProcessed(settled.processedOffsets)
        // Stored is what catching up waits for: a retry finds it from now on.
        let reached = parked.committable
        positions.withLock { positions -> CheckedContinuation<Void, Never>? in
            positions.reached[partition] = reached
            // Only for something to commit: a batch wholly parked moves nothing.
            guard reached > positions.committed[partition] ?? 0 else { return nil }
            defer { positions.committerWaiting = nil }
            return positions.committerWaiting
        }?.resume()
        return true
    }

    /// Stores parked chats when their backoff is due, until they are empty again.
    private func retryParked(_ parked: ParkedChats, partition: Int) async {
        while !isStopping && !Task.isCancelled {
            guard let (chatID, waiting) = parked.nextDue() else {
                // Nothing parked: no timer, `park` wakes this (a timer each was 80 wake-ups a
                // second over 16 partitions, for nothing).
                guard let due = parked.timeUntilNextDue else {
                    await parked.waitUntilParked()
                    continue
                }
                try? await Task.sleep(for: min(due, configuration.parkedPollInterval))
                continue
            }
            guard let (settled, failed) = await store([chatID: waiting], partition: partition) else { return }
            let failure = failed[chatID]
            let storedCount = failure == nil ? waiting.count : 0
            guard await finish(settled, partition: partition, parked: parked) else { return }
            let delay = parked.stored(storedCount, of: chatID, failed: failure != nil, maxDelay: configuration.maxRetryDelay)
            if let failure {
                logger.warning("chat still failing; retrying with backoff", metadata: [
                    "chat": "\(chatID)", "partition": "\(partition)", "waiting": "\(waiting.count)", "delay": "\(delay)", "error": "\(failure)",
                ])
            } else if !parked.isParked(chatID) {
                logger.info("chat recovered; its parked messages are stored", metadata: ["chat": "\(chatID)", "partition": "\(partition)"])
            }
        }
    }

    /// What a stored batch means for the gateway's table and for the members.
    private struct Settled: Sendable {
        var settlements: [(AcceptedMessages.Key, AcceptedMessages.Settlement)] = []
        /// Newly stored messages per chat, in sequence order, with the chat's members.
        var stored: [(chatID: UInt64, messages: [StoredMessage], members: Set<UInt64>)] = []
        /// The log records these settle (stored, refused or skipped): the offset may pass them.
        var processedOffsets: [UInt64] = []
    }

    /// Stores a batch, every chat in one transaction, each chat's records in log order. A chat
    /// that is parked, or whose store fails now, has its messages parked instead. Nil if
    /// cancelled.
    private func process(_ records: [LogRecord], partition: Int, parked: ParkedChats) async -> Settled? {
        var byChat: [UInt64: [ParkedChats.Entry]] = [:]
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
            byChat[message.chatID, default: []].append(.init(offset: record.offset, message: message))
        }
        // A parked chat's new messages queue behind its parked ones, keeping the chat's order.
        let flowing = byChat.filter { !parked.appendIfParked($0.key, $0.value) }
        guard !flowing.isEmpty else { return skipped }
        guard let (settled, failed) = await store(flowing, partition: partition) else { return nil }
        for (chatID, reason) in failed {
            logger.warning("chat store failed; chat parked, other chats go on", metadata: [
                "chat": "\(chatID)", "partition": "\(partition)", "messages": "\(flowing[chatID]!.count)", "error": "\(reason)",
            ])
            parked.park(chatID, flowing[chatID]!)
        }
        skipped.settlements += settled.settlements
        skipped.stored += settled.stored
        skipped.processedOffsets += settled.processedOffsets
        return skipped
    }

    /// Stores the messages of these chats in one durable transaction; one attempt. Returns what
    /// was settled, and the chats that failed for a passing reason (nothing of theirs stored,
    /// nothing of theirs settled); nil if cancelled.
    private func store(_ byChat: [UInt64: [ParkedChats.Entry]], partition: Int) async -> (Settled, failed: [UInt64: String])? {
        if Task.isCancelled { return nil }
        var failed: [UInt64: String] = [:]
        // Keys the filter has never seen were never stored: the store need not look them up.
        let writes = byChat.map { chatID, entries in
            ChatWrite(chatID: chatID, messages: entries.map { StoredMessage($0.message) }, unseenKeys: Set(entries.lazy.map(\.message).filter {
                !self.dedupFilter.mightContain(deviceID: $0.senderDeviceID, clientMessageID: $0.clientMessageID)
            }.map(\.serverMessageID)))
        }
        let results: [ChatWriteResult]
        do {
            results = writes.isEmpty ? [] : try await writer.store(writes)
        } catch {
            if Task.isCancelled { return nil }
            for write in writes { failed[write.chatID] = "\(error)" }
            return (Settled(), failed)
        }
        var settled = Settled()
        for (write, result) in zip(writes, results) {
            let entries = byChat[write.chatID]!
            let outcomes: [StoreOutcome?]
            var added: [StoredMessage] = []
            var members: Set<UInt64> = []
            switch result {
            case .written(let found, let addedToChat, let chatMembers):
                outcomes = found
                added = addedToChat
                members = chatMembers
            case .chatNotFound:
                logger.warning("chat no longer exists; messages not stored", metadata: ["chat": "\(write.chatID)", "count": "\(entries.count)"])
                outcomes = entries.map { _ in nil }
            case .failed(.rejected(let reason)):
                // The database refuses these as they are: retrying cannot help.
                logger.critical("storage refuses these messages; they are skipped", metadata: [
                    "chat": "\(write.chatID)", "serverMessageIDs": "\(entries.map(\.message.serverMessageID))", "reason": "\(reason)",
                ])
                outcomes = entries.map { _ in nil }
            case .failed(let error):
                failed[write.chatID] = "\(error)"
                continue
            }
            for (entry, outcome) in zip(entries, outcomes) {
                let message = entry.message
                let key = AcceptedMessages.Key(deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID)
                switch outcome {
                case .stored(let message)?:
                    // Into the filter before the gateway's table lets go of it, so a retry always finds it.
                    dedupFilter.insert(deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID)
                    settled.settlements.append((key, .stored(serverMessageID: message.serverMessageID, sequence: message.sequence)))
                case .duplicate(let existing)?:
                    settled.settlements.append((key, .stored(serverMessageID: existing.serverMessageID, sequence: existing.sequence)))
                case .conflict(let existing)?:
                    logger.warning("client message id reused for a different message; not stored", metadata: [
                        "device": "\(message.senderDeviceID)", "clientMessageID": "\(message.clientMessageID)", "stored": "\(existing.serverMessageID)",
                    ])
                    settled.settlements.append((key, .refused))
                case nil:
                    if case .written = result, !members.contains(message.senderUserID) {
                        logger.warning("sender is not a member of the chat; not stored", metadata: ["chat": "\(write.chatID)", "user": "\(message.senderUserID)"])
                    }
                    settled.settlements.append((key, .refused))
                }
            }
            settled.processedOffsets += entries.map(\.offset)
            if !added.isEmpty { settled.stored.append((write.chatID, added, members)) }
        }
        return (settled, failed)
    }

    /// Hands newly stored messages to the live devices of each chat's members, one call per
    /// device and chat for the whole batch, each message encoded once. A device that is not
    /// live gets them by replay when it connects.
    private func fanOut(_ stored: [(chatID: UInt64, messages: [StoredMessage], members: Set<UInt64>)]) async {
        for (chatID, messages, members) in stored {
            recent?.add(messages, chatID: chatID)
            let devices = live.devices(of: members)
            guard !devices.isEmpty else { continue }
            let pushes = messages.map(EncodedPush.init)
            for device in devices { device.notify(pushes) }
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
