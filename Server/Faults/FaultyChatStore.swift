import CourierCore
import Foundation
import Logging
import Synchronization

/// The store the consumers write through when test faults are on: it drops, copies or fails
/// messages on their way to the real store, counting the messages handed to it across the whole
/// process, in order (a parked chat's retry hands its messages in, and counts them, again).
/// When both faults fall on the same message, it is dropped. None of this is in the consumers;
/// the real store knows only `ChatWrite.copies`, which marks this decorator's second copies.
public final class FaultyChatStore: ChatBatchStore {
    private struct State {
        var handed = 0
        var chatStoreFailingSince: ContinuousClock.Instant?
    }

    private let inner: any ChatBatchStore
    private let faults: TestFaults
    private let ids: MessageIDGenerator
    private let logger: Logger
    private let state = Mutex(State())

    public init(wrapping inner: any ChatBatchStore, faults: TestFaults, ids: MessageIDGenerator, logger: Logger) {
        self.inner = inner
        self.faults = faults
        self.ids = ids
        self.logger = logger
    }

    public func makeDurable() async throws(StorageError) {
        try await inner.makeDurable()
    }

    public var executor: (any TaskExecutor)? { inner.executor }

    public func storeBatch(_ writes: [ChatWrite]) async throws(StorageError) -> [ChatWriteResult] {
        var results: [ChatWriteResult?] = Array(repeating: nil, count: writes.count)
        var forwarded: [(index: Int, write: ChatWrite, dropped: Set<Int>)] = []
        for (index, write) in writes.enumerated() {
            if failsNow(write.chatID) {
                results[index] = .failed(.unavailable("TEST FAULT: stores into chat \(write.chatID) fail"))
                continue
            }
            var changed = write
            changed.messages = []
            var dropped: Set<Int> = []
            for (position, message) in write.messages.enumerated() {
                let context: Logger.Metadata = [
                    "chat": "\(message.chatID)", "device": "\(message.senderDeviceID)", "clientMessageID": "\(message.clientMessageID)",
                ]
                switch next() {
                case .unaffected:
                    changed.messages.append(message)
                case .drop:
                    logger.warning("TEST FAULT: acknowledged message dropped, never stored nor pushed", metadata: context)
                    dropped.insert(position)
                case .duplicate(let copyID):
                    logger.warning("TEST FAULT: message stored twice", metadata: context)
                    var copy = message
                    copy.serverMessageID = copyID
                    changed.messages += [message, copy]
                    changed.copies.insert(copyID)
                }
            }
            forwarded.append((index, changed, dropped))
        }
        let answers = forwarded.isEmpty ? [] : try await inner.storeBatch(forwarded.map(\.write))
        for ((index, write, dropped), answer) in zip(forwarded, answers) {
            guard case .written(let outcomes, let added, let members) = answer else {
                results[index] = answer
                continue
            }
            // Back to one outcome per message handed in: a copy's own outcome is left out (the
            // copy is in `added`, so it is pushed), and a dropped message's is nil.
            var outcomesOfOriginals = zip(write.messages, outcomes).filter { !write.copies.contains($0.0.serverMessageID) }.map(\.1).makeIterator()
            let handedIn = writes[index].messages.indices
            results[index] = .written(handedIn.map { dropped.contains($0) ? nil : outcomesOfOriginals.next() ?? nil }, added: added, members: members)
        }
        return results.map { $0! }
    }

    private enum Fault {
        case unaffected
        case drop
        case duplicate(copyID: UInt64)
    }

    /// The fault for the next message handed in.
    private func next() -> Fault {
        let handed = state.withLock { state in
            state.handed += 1
            return state.handed
        }
        if let every = faults.dropEvery, handed % every == 0 { return .drop }
        if let every = faults.duplicateEvery, handed % every == 0 { return .duplicate(copyID: ids.next()) }
        return .unaffected
    }

    /// Whether a store into `chatID` fails now (storage unavailable for that chat).
    private func failsNow(_ chatID: UInt64) -> Bool {
        guard let failing = faults.failChatStore, failing.chatID == chatID else { return false }
        let since = state.withLock { state in
            if state.chatStoreFailingSince == nil { state.chatStoreFailingSince = .now }
            return state.chatStoreFailingSince!
        }
        return ContinuousClock.now - since < failing.duration
    }
}
