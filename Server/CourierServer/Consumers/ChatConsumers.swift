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
/// one sender's messages keep their order. A record that fails for a passing reason (storage
/// busy, full) is retried with backoff until it succeeds; the offset does not move past it.
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

        while !isStopping && !Task.isCancelled {
            let records: [LogRecord]
            do {
                records = try await log.read(partition: partition, from: offset, maxBytes: configuration.batchBytes)
            } catch {
                logger.error("log read failed", metadata: ["partition": "\(partition)", "offset": "\(offset)", "error": "\(error)"])
                try? await Task.sleep(for: configuration.maxRetryDelay)
                continue
            }
            guard let last = records.last else {
                await log.waitForRecords(partition: partition, at: offset, timeout: configuration.idleWait)
                continue
            }
            // Cancelled midway: nothing is committed, so the batch is replayed next time.
            guard let settled = await process(records, partition: partition) else { return }
            let next = last.offset + 1
            // Durable before anyone hears of a sequence number: a power cut must not let a
            // replay number these messages differently from what devices and retries were told.
            guard await retrying("sync storage for partition \(partition)", { try await self.storage.makeDurable() }) != nil else { return }
            for (key, settlement) in settled.settlements { accepted.settle(key, settlement) }
            for (chatID, messages) in settled.stored { await fanOut(messages, chatID: chatID) }
            guard await retrying("commit offset \(next) of partition \(partition)", { try await self.log.commit(group: Self.group, partition: partition, offset: next) }) != nil else { return }
            offset = next
            positions.withLockedValue { $0[partition] = offset }
            metrics.recordLag(partition: partition, records: await log.durableNextOffset(partition: partition) - offset)
        }
    }

    /// What a stored batch means for the gateway's table and for the members.
    private struct Settled: Sendable {
        var settlements: [(AcceptedMessages.Key, AcceptedMessages.Settlement)] = []
        /// Newly stored messages per chat, in sequence order.
        var stored: [(UInt64, [StoredMessage])] = []
    }

    /// Stores a batch: chats concurrently, each chat's records in log order. Nil if cancelled.
    private func process(_ records: [LogRecord], partition: Int) async -> Settled? {
        var byChat: [UInt64: [AcceptedMessage]] = [:]
        var order: [UInt64] = []
        func add(_ messages: AcceptedMessage...) {
            if byChat[messages[0].chatID] == nil { order.append(messages[0].chatID) }
            byChat[messages[0].chatID, default: []] += messages
        }
        var dropped = Settled()
        var copies: Set<UInt64> = []
        for record in records {
            let message: AcceptedMessage
            do {
                message = try AcceptedMessage(serializedBytes: record.payload)
            } catch {
                // Only the gateway writes the log, so this is a bug or damage; skipping it is
                // the only way forward, and it is said loudly.
                logger.error("undecodable log record skipped", metadata: ["partition": "\(partition)", "offset": "\(record.offset)", "error": "\(error)"])
                continue
            }
            switch faults?.next() ?? .unaffected {
            case .unaffected:
                add(message)
            case .drop:
                logger.warning("TEST FAULT: acknowledged message dropped, never stored nor pushed", metadata: [
                    "chat": "\(message.chatID)", "device": "\(message.senderDeviceID)", "clientMessageID": "\(message.clientMessageID)",
                ])
                dropped.settlements.append((AcceptedMessages.Key(deviceID: message.senderDeviceID, clientMessageID: message.clientMessageID), .refused))
            case .duplicate(let copyID):
                logger.warning("TEST FAULT: message stored twice", metadata: [
                    "chat": "\(message.chatID)", "device": "\(message.senderDeviceID)", "clientMessageID": "\(message.clientMessageID)",
                ])
                var copy = message
                copy.serverMessageID = copyID
                copies.insert(copyID)
                add(message, copy)
            }
        }
        return await withTaskGroup(of: Settled?.self) { group in
            for chatID in order {
                let messages = byChat[chatID]!
                group.addTask { [copies] in
                    var settled = Settled()
                    var start = 0
                    while start < messages.count {
                        var end = min(messages.count, start + self.configuration.maxMessagesPerTransaction)
                        // A copy goes in the same transaction as the message it copies.
                        if end < messages.count, copies.contains(messages[end].serverMessageID) { end += 1 }
                        guard let part = await self.store(Array(messages[start..<end]), chatID: chatID, copies: copies) else { return nil }
                        settled.settlements += part.settlements
                        settled.stored += part.stored
                        start = end
                    }
                    return settled
                }
            }
            var all = dropped
            for await part in group {
                guard let part else { return nil }
                all.settlements += part.settlements
                all.stored += part.stored
            }
            return all
        }
    }

    /// Stores messages of one chat in log order, retrying until storage takes them. Nil if
    /// cancelled.
    private func store(_ messages: [AcceptedMessage], chatID: UInt64, copies: Set<UInt64>) async -> Settled? {
        enum Attempt: Sendable { case outcomes([ChatEntity.Outcome]), chatGone, rejected(String) }
        guard let attempt: Attempt = await retrying("store \(messages.count) message(s) in chat \(chatID)", {
            do {
                return .outcomes(try await self.chats.withEntity(chatID) { try await $0.store(messages, copies: copies) })
            } catch StorageError.notFound {
                return .chatGone
            } catch StorageError.rejected(let reason) {
                // The database refuses these as they are: retrying cannot help.
                return .rejected(reason)
            }
        }) else { return nil }
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
        return settled
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
