import CoAP
import CourierLog
import CourierProtocol
import CourierStorage
import Foundation
import Logging

/// `POST /v1/msg`: authenticates the device, validates the SendMessage, checks that the sender
/// is a member of the chat, and answers 2.01 only once the message is in the durable log.
/// A retry of a message already taken gets the first answer again.
public struct MessageIntake: Sendable {
    public struct Limits: Sendable {
        /// Longest message text, in UTF-8 bytes; longer is 4.13.
        public var maxTextBytes = 8 * 1024
        /// Max-Age on a 5.03.
        public var retryAfterSeconds: UInt32 = 1
        /// Requests per second one device may make on average, and in a burst; beyond, 4.29.
        public var deviceRatePerSecond = 50.0
        public var deviceBurst = 100
        public init() {}
    }

    let log: any MessageLog
    let storage: any CourierStorage
    let authenticator: TokenAuthenticator
    let chats: ShardRegion<ChatEntity>
    let accepted: AcceptedMessages
    let dedupFilter: DedupFilter
    let ids: MessageIDGenerator
    let metrics: ServerMetrics
    let limits: Limits
    let rateLimiter: DeviceRateLimiter
    let logger: Logger

    public init(log: any MessageLog, storage: any CourierStorage, authenticator: TokenAuthenticator, chats: ShardRegion<ChatEntity>, accepted: AcceptedMessages, dedupFilter: DedupFilter, ids: MessageIDGenerator, metrics: ServerMetrics, limits: Limits = Limits(), logger: Logger) {
        self.dedupFilter = dedupFilter
        self.log = log
        self.storage = storage
        self.authenticator = authenticator
        self.chats = chats
        self.accepted = accepted
        self.ids = ids
        self.metrics = metrics
        self.limits = limits
        self.rateLimiter = DeviceRateLimiter(ratePerSecond: limits.deviceRatePerSecond, burst: limits.deviceBurst)
        self.logger = logger
    }

    /// The device token of a request: the first Uri-Query option `t=TOKEN`.
    static func token(of message: CoAPMessage) -> String? {
        message.uriQuery.first { $0.hasPrefix("t=") }.map { String($0.dropFirst(2)) }
    }

    enum Authentication {
        case identified(TokenIdentity)
        /// The 4.01 to answer (or 5.03 when storage cannot tell).
        case refused(CoAPMessage)
    }

    /// Who sent `request`.
    func authenticate(_ request: IncomingRequest) async -> Authentication {
        guard let token = Self.token(of: request.message) else {
            // Short on purpose: an unauthenticated request never draws a large response.
            return .refused(Self.error(.unauthorized, .unauthorized, "no token"))
        }
        do {
            guard let identity = try await authenticator.authenticate(token) else {
                return .refused(Self.error(.unauthorized, .unauthorized, "bad token"))
            }
            // A flooding device is turned away here, before it costs a decode or a log append.
            if case .limited(let seconds) = rateLimiter.take(identity.deviceID) {
                return .refused(Self.error(.tooManyRequests, .rateLimited, "too many requests from this device", retryAfter: seconds))
            }
            return .identified(identity)
        } catch {
            logger.error("token check failed", metadata: ["error": "\(error)"])
            return .refused(Self.error(.serviceUnavailable, .overloaded, "try again", retryAfter: limits.retryAfterSeconds))
        }
    }

    public func send(_ request: IncomingRequest) async -> CoAPMessage {
        let identity: TokenIdentity
        switch await authenticate(request) {
        case .identified(let found): identity = found
        case .refused(let response): return response
        }
        let message: SendMessage
        do {
            message = try SendMessage(serializedBytes: request.message.payload)
        } catch {
            return Self.error(.badRequest, .badRequest, "SendMessage: \(error)")
        }
        guard message.text.utf8.count <= limits.maxTextBytes else {
            return Self.error(.requestEntityTooLarge, .tooLarge, "text is \(message.text.utf8.count) bytes; the limit is \(limits.maxTextBytes)")
        }
        guard !message.text.isEmpty else {
            return Self.error(.badRequest, .badRequest, "text is empty")
        }

        do {
            guard try await chats.withEntity(message.chatID, { try await $0.permits(identity.userID) }) else {
                return Self.error(.forbidden, .forbidden, "not a member of chat \(message.chatID)")
            }
        } catch StorageError.notFound {
            return Self.error(.notFound, .notFound, "no chat \(message.chatID)")
        } catch {
            logger.warning("membership check failed", metadata: ["chat": "\(message.chatID)", "error": "\(error)"])
            return Self.error(.serviceUnavailable, .overloaded, "try again", retryAfter: limits.retryAfterSeconds)
        }

        let key = AcceptedMessages.Key(deviceID: identity.deviceID, clientMessageID: message.clientMessageID)
        let acceptance = AcceptedMessages.Acceptance(
            serverMessageID: ids.next(), chatID: message.chatID, text: message.text, acceptedAtMilliseconds: Date().milliseconds
        )
        switch await accepted.claim(key, acceptance) {
        case .full:
            return Self.error(.serviceUnavailable, .overloaded, "too many messages waiting to be stored", retryAfter: limits.retryAfterSeconds)
        case .accepted(let earlier):
            guard earlier.matches(chatID: message.chatID, text: message.text) else { return Self.conflict(message) }
            metrics.countReplay(answeredFrom: "in_flight")
            return Self.created(message.clientMessageID, earlier.serverMessageID, earlier.chatID, sequence: earlier.sequence, earlier.acceptedAtMilliseconds)
        case .claimed:
            break
        }

        // Not in flight here: it may be stored already (a retry after the chat stored it). The
        // filter rules that out for almost every new message without asking the database.
        do {
            if dedupFilter.mightContain(deviceID: identity.deviceID, clientMessageID: message.clientMessageID),
               let stored = try await storage.message(deviceID: identity.deviceID, clientMessageID: message.clientMessageID) {
                accepted.finish(key, inLog: false)
                guard stored.chatID == message.chatID, stored.text == message.text else { return Self.conflict(message) }
                metrics.countReplay(answeredFrom: "storage")
                return Self.created(message.clientMessageID, stored.serverMessageID, stored.chatID, sequence: stored.sequence, stored.acceptedAtMilliseconds)
            }
        } catch {
            accepted.finish(key, inLog: false)
            logger.warning("dedup lookup failed", metadata: ["error": "\(error)"])
            return Self.error(.serviceUnavailable, .overloaded, "try again", retryAfter: limits.retryAfterSeconds)
        }

        let record = AcceptedMessage(
            serverMessageID: acceptance.serverMessageID, chatID: message.chatID,
            senderUserID: identity.userID, senderDeviceID: identity.deviceID,
            clientMessageID: message.clientMessageID, text: message.text,
            clientSentAtMs: message.clientSentAtMs, acceptedAtMs: acceptance.acceptedAtMilliseconds
        )
        let started = ContinuousClock.now
        do {
            _ = try await log.append(record.serializedBytes(), partition: log.partition(forUser: identity.userID))
        } catch {
            accepted.finish(key, inLog: false)
            switch error {
            case .overloaded(let seconds):
                metrics.countAppend(result: "overloaded")
                return Self.error(.serviceUnavailable, .overloaded, "the log is busy", retryAfter: seconds)
            case .diskFull:
                metrics.countAppend(result: "disk_full")
                logger.error("log append failed: disk full")
                return Self.error(.serviceUnavailable, .storageFull, "storage is full; nothing was stored", retryAfter: 30)
            default:
                metrics.countAppend(result: "failed")
                logger.error("log append failed", metadata: ["error": "\(error)"])
                return Self.error(.internalServerError, .internalError, "nothing was stored", retryAfter: limits.retryAfterSeconds)
            }
        }
        let elapsed = (ContinuousClock.now - started).components
        metrics.appendLatency.recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        metrics.countAppend(result: "ok")
        accepted.finish(key, inLog: true)
        return Self.created(message.clientMessageID, acceptance.serverMessageID, message.chatID, sequence: 0, acceptance.acceptedAtMilliseconds)
    }

    static func created(_ clientMessageID: String, _ serverMessageID: UInt64, _ chatID: UInt64, sequence: UInt64, _ acceptedAt: Int64) -> CoAPMessage {
        let result = SendResult(clientMessageID: clientMessageID, serverMessageID: serverMessageID, chatID: chatID, chatSequence: sequence, acceptedAtMs: acceptedAt)
        return .response(.created, payload: result.serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
    }

    static func conflict(_ message: SendMessage) -> CoAPMessage {
        error(.conflict, .conflict, "client_message_id \(message.clientMessageID) was used for a different message")
    }

    /// An error response with its Protobuf body, and Max-Age when it is worth retrying.
    static func error(_ code: CoAPCode, _ wireCode: WireErrorCode, _ text: String, retryAfter: UInt32 = 0) -> CoAPMessage {
        var response = CoAPMessage.response(code, payload: WireError(code: wireCode, message: text, retryAfterSeconds: retryAfter).serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
        if retryAfter > 0 { response.setUIntOption(.maxAge, retryAfter) }
        return response
    }
}
