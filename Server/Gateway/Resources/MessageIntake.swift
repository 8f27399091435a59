import CoAP
import CourierActors
import CourierCore
import CourierLog
import CourierProtocol
import Foundation

/// `POST /v1/msg`: validates the SendMessage of an authenticated device, checks that the sender
/// is a member of the chat, and answers 2.01 only once the message is in the durable log.
/// A retry of a message already taken gets the first answer again.
public struct MessageIntake: MessageSending {

    let log: any MessageLog
    public let storage: any ServerStorage
    public let chats: ShardRegion<ChatEntity>
    let accepted: AcceptedMessages
    let dedupFilter: DedupFilter
    let ids: MessageIDGenerator
    let metrics: ServerMetrics
    /// Longest message text, in UTF-8 bytes; longer is 4.13.
    let maxTextBytes: Int

    public init(log: any MessageLog, storage: any ServerStorage, chats: ShardRegion<ChatEntity>, accepted: AcceptedMessages, dedupFilter: DedupFilter, ids: MessageIDGenerator, metrics: ServerMetrics, maxTextBytes: Int = 8 * 1024) {
        self.dedupFilter = dedupFilter
        self.log = log
        self.storage = storage
        self.chats = chats
        self.accepted = accepted
        self.ids = ids
        self.metrics = metrics
        self.maxTextBytes = maxTextBytes
    }

    /// `POST /v1/msg` for the device the context names.
    public func send(_ context: RequestContext) async throws -> CoAPMessage {
        let identity = try context.device()
        let message = try Self.message(context, maxTextBytes: maxTextBytes)

        try await Self.requireMember(identity.userID, of: message.chatID, in: chats)
        try await Self.checkChange(message, by: identity.userID, in: storage)

        let key = AcceptedMessages.Key(deviceID: identity.deviceID, clientMessageID: message.clientMessageID)
        let acceptance = AcceptedMessages.Acceptance(
            serverMessageID: ids.next(), chatID: message.chatID, text: message.text, change: message.change, acceptedAtMilliseconds: Date().milliseconds
        )
        switch await accepted.claim(key, acceptance) {
        case .full:
            throw Refusal(.serviceUnavailable, .overloaded, "too many messages waiting to be stored")
        case .accepted(let earlier):
            guard earlier.matches(chatID: message.chatID, text: message.text, change: message.change) else { throw Self.conflict(message) }
            metrics.countReplay(answeredFrom: "in_flight")
            return Self.created(message.clientMessageID, earlier.serverMessageID, earlier.chatID, sequence: earlier.sequence, earlier.acceptedAtMilliseconds)
        case .claimed:
            break
        }

        // Not in flight here: it may be stored already (a retry after the chat stored it). The
        // filter rules that out for almost every new message without asking the database.
        let stored: StoredMessage?
        do {
            stored = dedupFilter.mightContain(deviceID: identity.deviceID, clientMessageID: message.clientMessageID)
                ? try await storage.message(deviceID: identity.deviceID, clientMessageID: message.clientMessageID) : nil
        } catch {
            accepted.finish(key, inLog: false)
            throw Refusal.unavailable("dedup lookup", cause: error)
        }
        if let stored {
            accepted.finish(key, inLog: false)
            guard stored.isSameSend(chatID: message.chatID, text: message.text, change: message.change) else { throw Self.conflict(message) }
            metrics.countReplay(answeredFrom: "storage")
            return Self.created(message.clientMessageID, stored.serverMessageID, stored.chatID, sequence: stored.sequence, stored.acceptedAtMilliseconds)
        }

        let record = AcceptedMessage(
            serverMessageID: acceptance.serverMessageID, chatID: message.chatID,
            senderUserID: identity.userID, senderDeviceID: identity.deviceID,
            clientMessageID: message.clientMessageID, text: message.text,
            clientSentAtMs: message.clientSentAtMs, acceptedAtMs: acceptance.acceptedAtMilliseconds,
            change: message.change
        )
        let started = ContinuousClock.now
        do {
            _ = try await log.append(record.serializedBytes(), partition: log.partition(forUser: identity.userID))
        } catch {
            accepted.finish(key, inLog: false)
            switch error {
            case .overloaded: metrics.countAppend(result: "overloaded")
            case .diskFull: metrics.countAppend(result: "disk_full")
            default: metrics.countAppend(result: "failed")
            }
            throw error
        }
        let elapsed = (ContinuousClock.now - started).components
        metrics.appendLatency.recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        metrics.countAppend(result: "ok")
        accepted.finish(key, inLog: true)
        return Self.created(message.clientMessageID, acceptance.serverMessageID, message.chatID, sequence: 0, acceptance.acceptedAtMilliseconds)
    }

    /// The SendMessage of a request, its text checked: 4.13 when longer than `maxTextBytes`,
    /// 4.00 when empty (or, for a change, not what the change takes).
    static func message(_ context: RequestContext, maxTextBytes: Int) throws(Refusal) -> SendMessage {
        let message = try context.body(SendMessage.self)
        guard message.text.utf8.count <= maxTextBytes else {
            throw Refusal(.requestEntityTooLarge, .tooLarge, "text is \(message.text.utf8.count) bytes; the limit is \(maxTextBytes)")
        }
        if let change = message.change {
            if let problem = change.problem(withText: message.text) { throw Refusal(.badRequest, .badRequest, problem) }
        } else {
            guard !message.text.isEmpty else { throw Refusal(.badRequest, .badRequest, "text is empty") }
        }
        return message
    }

    /// 4.04 for no such chat, 4.03 unless `userID` is a member: a live chat that knows the
    /// sender says so without its actor; otherwise the chat's actor is asked (and may reload).
    static func requireMember(_ userID: UInt64, of chatID: UInt64, in chats: ShardRegion<ChatEntity>) async throws {
        // No hop onto the actor and back: the store re-checks membership anyway.
        if chats.liveEntity(chatID)?.isKnownMember(userID) == true { return }
        let permitted: Bool
        do {
            permitted = try await chats.withEntity(chatID) { try await $0.permits(userID) }
        } catch StorageError.notFound {
            throw Refusal(.notFound, .notFound, "no chat \(chatID)")
        } catch {
            throw Refusal.unavailable("membership check of chat \(chatID)", cause: error)
        }
        guard permitted else { throw Refusal(.forbidden, .forbidden, "not a member of chat \(chatID)") }
    }

    /// An edit or a delete must refer to a message (not a change) that the sender sent: 4.04
    /// when the sequence holds nothing yet, 4.00 when it holds a change, 4.03 when another user
    /// sent it. What is checked never changes once stored, so a retry passes as the first did;
    /// the chat's writer applies the change in its order (editing a message deleted meanwhile
    /// changes nothing).
    static func checkChange(_ message: SendMessage, by userID: UInt64, in storage: any ServerStorage) async throws(Refusal) {
        guard let sequence = message.change?.sequence else { return }
        let target: StoredMessage?
        do {
            target = try await storage.history(chatID: message.chatID, afterSequence: sequence - 1, limit: 1).first
        } catch {
            throw Refusal.unavailable("reading message \(sequence) of chat \(message.chatID)", cause: error)
        }
        guard let target, target.sequence == sequence else { throw Refusal(.notFound, .notFound, "chat \(message.chatID) has no message \(sequence) yet") }
        guard target.change == nil else { throw Refusal(.badRequest, .badRequest, "entry \(sequence) of chat \(message.chatID) is a change, not a message") }
        guard target.senderUserID == userID else { throw Refusal(.forbidden, .forbidden, "only its sender may edit or delete message \(sequence)") }
    }

    static func created(_ clientMessageID: String, _ serverMessageID: UInt64, _ chatID: UInt64, sequence: UInt64, _ acceptedAt: Int64) -> CoAPMessage {
        let result = SendResult(clientMessageID: clientMessageID, serverMessageID: serverMessageID, chatID: chatID, chatSequence: sequence, acceptedAtMs: acceptedAt)
        return .response(.created, payload: result.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }

    static func conflict(_ message: SendMessage) -> Refusal {
        Refusal(.conflict, .conflict, "client_message_id \(message.clientMessageID) was used for a different message")
    }
}
