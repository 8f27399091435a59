import CoAP
import CourierActors
import CourierCore
import CourierProtocol
import Foundation
import Synchronization

/// `POST /v1/msg` on a node of a cluster: answers 2.01 only once the message is committed to
/// the cluster's PostgreSQL, numbered in its chat by the transaction that holds the chat's row
/// (so a chat's sequence is gapless and unique whichever node took each message). A retry, to
/// this node or another, finds the message by its device and client message id inside such a
/// transaction and gets the same id and sequence.
///
/// There is no log here: the database is the durability point, and a node's disk holds nothing
/// that must survive it. Concurrent sends share transactions (`store` is the group-commit
/// writer); the sender's membership is checked inside the transaction too.
public struct ClusterIntake: MessageSending {
    /// Messages a commit added to a chat, with the chat's members as the commit saw them.
    public typealias Committed = @Sendable (_ chatID: UInt64, _ messages: [StoredMessage], _ members: Set<UInt64>) -> Void

    public let storage: any ServerStorage
    public let chats: ShardRegion<ChatEntity>
    let store: any ChatBatchStore
    let accepted: AcceptedMessages
    let committed: Committed
    let metrics: ServerMetrics
    let maxTextBytes: Int
    /// How long a send waits for its commit before the device hears 5.03 (and retries).
    let commitDeadline: Duration

    /// `store` commits; `committed` hears what each commit added (for the pushes).
    public init(storage: any ServerStorage, chats: ShardRegion<ChatEntity>, store: any ChatBatchStore, accepted: AcceptedMessages, metrics: ServerMetrics, maxTextBytes: Int = 8 * 1024, commitDeadline: Duration = .seconds(3), committed: @escaping Committed) {
        self.commitDeadline = commitDeadline
        self.storage = storage
        self.chats = chats
        self.store = store
        self.accepted = accepted
        self.metrics = metrics
        self.maxTextBytes = maxTextBytes
        self.committed = committed
    }

    public func send(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let message = try MessageIntake.message(context, maxTextBytes: maxTextBytes)
        // PostgreSQL's text cannot hold NUL: refused here, or the commit would fail on every retry.
        guard !message.text.utf8.contains(0) else { throw Refusal(.badRequest, .badRequest, "text contains a NUL character") }
        if message.change != nil {
            // A message's membership check is in its transaction; a change reads the message it
            // refers to first, which only a member may learn about.
            try await MessageIntake.requireMember(identity.userID, of: message.chatID, in: chats)
            try await MessageIntake.checkChange(message, by: identity.userID, in: storage)
        }
        let key = AcceptedMessages.Key(deviceID: identity.deviceID, clientMessageID: message.clientMessageID)
        let now = Date().milliseconds
        // A retry on this node while the first send's transaction runs waits for its answer.
        switch await accepted.claim(key, .init(serverMessageID: 0, chatID: message.chatID, text: message.text, change: message.change, acceptedAtMilliseconds: now)) {
        case .full:
            throw Refusal(.serviceUnavailable, .overloaded, "too many messages waiting to be committed")
        case .accepted(let earlier):
            guard earlier.matches(chatID: message.chatID, text: message.text, change: message.change) else { throw MessageIntake.conflict(message) }
            metrics.countReplay(answeredFrom: "in_flight")
            return MessageIntake.created(message.clientMessageID, earlier.serverMessageID, earlier.chatID, sequence: earlier.sequence, earlier.acceptedAtMilliseconds)
        case .claimed:
            break
        }

        let sent = StoredMessage(
            serverMessageID: 0, chatID: message.chatID, sequence: 0, senderUserID: identity.userID, senderDeviceID: identity.deviceID,
            clientMessageID: message.clientMessageID, text: message.text, clientSentAtMilliseconds: message.clientSentAtMs, acceptedAtMilliseconds: now,
            change: message.change
        )
        let outcome: StoreOutcome
        do {
            outcome = try await commit(sent, chatID: message.chatID)
        } catch {
            accepted.finish(key, inLog: false)
            throw error
        }
        switch outcome {
        case .stored(let stored), .duplicate(let stored):
            accepted.settle(key, .stored(serverMessageID: stored.serverMessageID, sequence: stored.sequence))
            accepted.finish(key, inLog: true)
            if case .duplicate = outcome { metrics.countReplay(answeredFrom: "storage") } else { metrics.countAppend(result: "ok") }
            return MessageIntake.created(message.clientMessageID, stored.serverMessageID, stored.chatID, sequence: stored.sequence, stored.acceptedAtMilliseconds)
        case .conflict:
            accepted.finish(key, inLog: false)
            throw MessageIntake.conflict(message)
        }
    }

    /// Commits one message (with whatever else this node sends meanwhile) and tells
    /// `committed` what the commit added to the chat.
    private func commit(_ message: StoredMessage, chatID: UInt64) async throws -> StoreOutcome {
        let result: ChatWriteResult
        switch await Self.commit(ChatWrite(chatID: chatID, messages: [message]), through: store, within: commitDeadline) {
        case .success(let written):
            result = written
        case .failure(let error):
            metrics.countAppend(result: error.isFull ? "disk_full" : "failed")
            throw Refusal.unavailable("commit to the cluster's database", cause: error)
        case nil:
            metrics.countAppend(result: "timeout")
            throw Refusal.unavailable("commit to the cluster's database", cause: StorageError.unavailable("no commit within \(commitDeadline)"))
        }
        switch result {
        case .chatNotFound:
            throw Refusal(.notFound, .notFound, "no chat \(chatID)")
        case .failed(let error):
            metrics.countAppend(result: "failed")
            throw Refusal.unavailable("commit to the cluster's database", cause: error)
        case .written(let outcomes, let added, let members):
            guard let outcome = outcomes.first ?? nil else { throw Refusal(.forbidden, .forbidden, "not a member of chat \(chatID)") }
            if !added.isEmpty { committed(chatID, added, members) }
            return outcome
        }
    }
}

extension ClusterIntake {
    /// The commit's result, or nil when it has not come within `deadline` (the database is
    /// gone or slow: the device hears 5.03 and retries). A commit on its way is never cancelled:
    /// it finishes or fails by itself, and a retry finds what it stored.
    static func commit(_ write: ChatWrite, through store: any ChatBatchStore, within deadline: Duration) async -> Result<ChatWriteResult, StorageError>? {
        await answer(within: deadline, otherwise: nil) {
            do throws(StorageError) { return .success(try await store.storeBatch([write])[0]) } catch { return .failure(error) }
        }
    }
}

extension StorageError {
    var isFull: Bool {
        if case .full = self { true } else { false }
    }
}
