import CoAP
import CourierProtocol
import Foundation
import NIOCore

/// Sends one message until the server answers it: through CoAP retransmissions (the endpoint's
/// own), then new exchanges after a failed one, waiting out a 5.03's or 4.29's Max-Age, with
/// backoff and jitter in between. Only an answer ends it: 2.xx (accepted: the server holds the
/// message durably) or another 4.xx (refused: retrying the same request cannot help).
///
/// Every attempt carries the same `client_message_id`, so the server stores the message once
/// however many attempts reach it.
public struct ReliableSender: Sendable {
    public struct Policy: Sendable {
        /// The first wait after a failed exchange; doubles per failure up to `maxBackoff`.
        public var initialBackoff: Duration = .milliseconds(500)
        public var maxBackoff: Duration = .seconds(30)
        /// How long one exchange may take, CoAP retransmissions included, before a new one.
        public var exchangeTimeout: Duration = .seconds(20)
        public init() {}
    }

    public enum Outcome: Sendable, Equatable {
        /// The server holds the message durably: forget it. `code` is the 2.xx it answered.
        case accepted(SendResult, code: CoAPCode)
        /// The server will never take this request: tell the user why.
        case refused(code: CoAPCode, error: WireError?)
    }

    /// What happened to one attempt, for a status line.
    public enum Attempt: Sendable, Equatable {
        /// No answer (or an unreadable one); the next attempt is after `retryIn`.
        case failed(reason: String, retryIn: Duration)
        /// The server asked to wait (5.03 or 4.29 with Max-Age, or 5.xx).
        case deferred(code: CoAPCode, retryIn: Duration)
    }

    public let endpoint: CoAPEndpoint
    /// Where attempts go: the first to the first, and each retry after a failure to the next
    /// in turn (the nodes of a cluster all take any device's messages).
    public let servers: [SocketAddress]
    public var server: SocketAddress { servers[0] }
    /// The device's token; empty when the transport names the device (DTLS).
    public let token: String
    public let policy: Policy
    /// Runs each exchange on the endpoint's loop, where its answer arrives.
    private let executor: EventLoopTaskExecutor
    private let deadlines: ExchangeDeadlines

    public init(endpoint: CoAPEndpoint, server: SocketAddress, token: String, policy: Policy = Policy()) {
        self.init(endpoint: endpoint, servers: [server], token: token, policy: policy)
    }

    public init(endpoint: CoAPEndpoint, servers: [SocketAddress], token: String, policy: Policy = Policy()) {
        precondition(!servers.isEmpty, "a sender needs a server")
        self.endpoint = endpoint
        self.servers = servers
        self.token = token
        self.policy = policy
        self.executor = EventLoopTaskExecutor(endpoint.eventLoop)
        self.deadlines = ExchangeDeadlines(eventLoop: endpoint.eventLoop, timeout: policy.exchangeTimeout)
    }

    /// Sends until answered; throws only `CancellationError` (the caller gave up, e.g. on quit).
    /// A `nudge` rung during a wait ends the wait early (the server is known to be back).
    public func send(_ message: SendMessage, nudge: Nudge? = nil, onAttempt: @Sendable (Attempt) -> Void = { _ in }) async throws -> Outcome {
        let request = CoAPMessage.request(
            .post, path: "/v1/msg", query: token.isEmpty ? [] : ["t=\(token)"], payload: message.serializedBytes(), contentFormat: CoAPContentFormat.protobuf
        )
        var failures = 0
        while true {
            try Task.checkCancellation()
            let wait: Duration
            switch await exchange(request, to: servers[failures % servers.count]) {
            case .answered(let response):
                let error = try? WireError(serializedBytes: response.payload)
                if response.code.codeClass == 2 {
                    guard let result = try? SendResult(serializedBytes: response.payload) else {
                        // A 2.xx we cannot read still means the server holds the message, but
                        // without its id; ask again (the retry is answered the same way).
                        failures += 1
                        wait = backoff(failures)
                        onAttempt(.failed(reason: "unreadable answer", retryIn: wait))
                        break
                    }
                    return .accepted(result, code: response.code)
                }
                if response.code.codeClass == 4 && response.code != .tooManyRequests {
                    return .refused(code: response.code, error: error)
                }
                // 5.xx, or 4.29: the server asks to wait (Max-Age), else back off.
                failures += 1
                let maxAge = response.uintOption(.maxAge).map { Duration.seconds(Int64($0)) }
                wait = max(maxAge ?? .zero, backoff(failures))
                onAttempt(.deferred(code: response.code, retryIn: wait))
            case .failed(let reason):
                failures += 1
                wait = backoff(failures)
                onAttempt(.failed(reason: reason, retryIn: wait))
            }
            if let nudge { try await nudge.sleep(for: wait) } else { try await Task.sleep(for: wait) }
        }
    }

    /// One exchange, cancelled when `exchangeTimeout` passes (`ExchangeDeadlines`): not a
    /// second task sleeping beside it, which was a task and a timer on Dispatch's timer thread
    /// per message, in a fleet thousands a second.
    private func exchange(_ request: CoAPMessage, to server: SocketAddress) async -> ExchangeResult {
        let endpoint = self.endpoint
        let attempt = Task(executorPreference: executor) { () -> ExchangeResult in
            do {
                return .answered(try await endpoint.request(request, to: server))
            } catch {
                return .failed("\(error)")
            }
        }
        let id = deadlines.start { attempt.cancel() }
        let result = await withTaskCancellationHandler { await attempt.value } onCancel: { attempt.cancel() }
        if deadlines.finish(id), case .failed = result { return .failed("no answer within \(policy.exchangeTimeout)") }
        return result
    }

    private enum ExchangeResult: Sendable {
        case answered(CoAPMessage)
        case failed(String)
    }

    private func backoff(_ failures: Int) -> Duration {
        Backoff.delay(failures: failures, initial: policy.initialBackoff, maximum: policy.maxBackoff)
    }
}
