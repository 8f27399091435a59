import NIOCore

/// The CoAP message layer of one endpoint (RFC 7252 §4), client and server sides, as a pure state
/// machine: events go in with the current time, actions come out for the channel handler to carry
/// out. It retransmits Confirmable messages with exponential backoff, deduplicates incoming
/// messages, matches responses to requests by token, enforces NSTART, and decides between a
/// piggybacked and a separate response.
struct MessageLayer {
    enum Action: Equatable {
        case send([UInt8], to: SocketAddress)
        /// Call `retransmissionsDue` at this time (or later): one timer serves every confirmable.
        case scheduleRetransmissionCheck(at: NIODeadline)
        /// Call `piggybackWindowsElapsed` at this time (or later): one timer serves every request.
        case schedulePiggybackSweep(at: NIODeadline)
        case scheduleSeparateResponseTimeout(token: [UInt8], at: NIODeadline)
        case deliverRequest(IncomingRequest)
        case completeRequest(token: [UInt8], Result<CoAPMessage, CoAPClientError>)
    }

    private enum ConfirmablePurpose {
        case request(token: [UInt8])
        case separateResponse
    }

    private struct OutgoingConfirmable {
        var datagram: [UInt8]
        var purpose: ConfirmablePurpose
        var retransmissions: Int
        var timeout: TimeAmount
        /// When it is sent again (or given up) unless acknowledged before.
        var deadline: NIODeadline
    }

    private struct ClientExchange {
        enum State { case queued(CoAPMessage), awaitingAck(messageID: UInt16), awaitingSeparateResponse }
        var peer: SocketAddress
        var state: State
    }

    private struct ServerExchange {
        var request: CoAPMessage
        var acknowledged = false
        /// When a confirmable request still unacknowledged gets an empty ACK (its response then
        /// goes separately); nil for a NON request and once acknowledged.
        var piggybackDeadline: NIODeadline?
    }

    let parameters: CoAPTransmissionParameters
    private var nextMessageID: UInt16
    private var nextToken: UInt64
    private var duplicates: DuplicateCache
    private var outgoing: [MessageKey: OutgoingConfirmable] = [:]
    private var outgoingResponseCount = 0
    private var clientExchanges: [[UInt8]: ClientExchange] = [:]
    /// Tokens waiting for an NSTART slot, per peer, in order.
    private var queuedTokens: [SocketAddress: CircularBuffer<[UInt8]>] = [:]
    private var outstanding: [SocketAddress: Int] = [:]
    private var serverExchanges: [MessageKey: ServerExchange] = [:]

    /// `seed` starts the Message ID and token sequences; pass a random one outside tests.
    init(parameters: CoAPTransmissionParameters, seed: UInt64) {
        self.parameters = parameters
        nextMessageID = UInt16(truncatingIfNeeded: seed)
        nextToken = seed
        duplicates = DuplicateCache(capacity: parameters.deduplicationCapacity, lifetime: parameters.exchangeLifetime)
    }

    var requestsInFlight: Int { serverExchanges.count }
    var pendingRequests: Int { clientExchanges.count }
    var rememberedMessages: Int { duplicates.count }

    // MARK: - Client side

    /// Starts a Confirmable request; the layer assigns its Message ID and token.
    /// Returns the token that its `completeRequest` action will carry.
    mutating func sendRequest(
        _ request: CoAPMessage, to peer: SocketAddress, now: NIODeadline, jitter: Double
    ) -> (token: [UInt8], actions: [Action]) {
        let token = makeToken()
        guard clientExchanges.count < parameters.maxPendingRequests else {
            return (token, [.completeRequest(token: token, .failure(.tooManyPendingRequests))])
        }
        var message = request
        message.type = .confirmable
        message.token = token
        clientExchanges[token] = ClientExchange(peer: peer, state: .queued(message))
        if outstanding[peer, default: 0] < parameters.nstart {
            return (token, transmitQueued(token: token, now: now, jitter: jitter))
        }
        queuedTokens[peer, default: CircularBuffer()].append(token)
        return (token, [])
    }

    /// Abandons a request (its caller went away); frees its NSTART slot.
    mutating func cancelRequest(token: [UInt8], now: NIODeadline, jitter: Double) -> [Action] {
        finishClientExchange(token: token, result: .failure(.cancelled), now: now, jitter: jitter)
    }

    private mutating func transmitQueued(token: [UInt8], now: NIODeadline, jitter: Double) -> [Action] {
        guard let exchange = clientExchanges[token], case .queued(var message) = exchange.state else { return [] }
        message.messageID = makeMessageID()
        let key = MessageKey(peer: exchange.peer, messageID: message.messageID)
        clientExchanges[token]?.state = .awaitingAck(messageID: message.messageID)
        outstanding[exchange.peer, default: 0] += 1
        return startConfirmable(key: key, datagram: message.encode(), purpose: .request(token: token), now: now, jitter: jitter)
    }

    /// Completes a client exchange, releases its slot and starts the next queued request to that peer.
    private mutating func finishClientExchange(
        token: [UInt8], result: Result<CoAPMessage, CoAPClientError>, now: NIODeadline, jitter: Double
    ) -> [Action] {
        guard let exchange = clientExchanges.removeValue(forKey: token) else { return [] }
        var actions: [Action] = [.completeRequest(token: token, result)]
        switch exchange.state {
        case .queued:
            queuedTokens[exchange.peer]?.removeAll { $0 == token }
            if queuedTokens[exchange.peer]?.isEmpty == true { queuedTokens[exchange.peer] = nil }
            return actions
        case .awaitingAck(let messageID):
            outgoing[MessageKey(peer: exchange.peer, messageID: messageID)] = nil
            actions += releaseSlot(of: exchange.peer, now: now, jitter: jitter)
        case .awaitingSeparateResponse:
            break  // its slot was released when the empty ACK came
        }
        return actions
    }

    private mutating func releaseSlot(of peer: SocketAddress, now: NIODeadline, jitter: Double) -> [Action] {
        let remaining = outstanding[peer, default: 1] - 1
        outstanding[peer] = remaining > 0 ? remaining : nil
        guard let next = queuedTokens[peer]?.popFirst() else { return [] }
        if queuedTokens[peer]?.isEmpty == true { queuedTokens[peer] = nil }
        return transmitQueued(token: next, now: now, jitter: jitter)
    }

    /// The separate response did not come in time.
    mutating func separateResponseTimedOut(token: [UInt8], now: NIODeadline, jitter: Double) -> [Action] {
        guard case .awaitingSeparateResponse = clientExchanges[token]?.state else { return [] }
        return finishClientExchange(token: token, result: .failure(.separateResponseTimeout), now: now, jitter: jitter)
    }

    // MARK: - Server side

    /// The application's answer to a request delivered earlier: piggybacked on the ACK when none
    /// was sent yet, otherwise a separate response.
    mutating func respond(to key: MessageKey, with response: CoAPMessage, now: NIODeadline, jitter: Double) -> [Action] {
        guard let exchange = serverExchanges.removeValue(forKey: key) else { return [] }
        var message = response
        message.token = exchange.request.token
        if exchange.request.type == .confirmable && !exchange.acknowledged {
            message.type = .acknowledgement
            message.messageID = key.messageID
            let datagram = message.encode()
            duplicates.record(key, token: exchange.request.token, reply: datagram, now: now)
            return [.send(datagram, to: key.peer)]
        }
        message.messageID = makeMessageID()
        let responseKey = MessageKey(peer: key.peer, messageID: message.messageID)
        // Past the bound a separate response goes out NON; the client's own retry covers a loss.
        if exchange.request.type == .confirmable && outgoingResponseCount < parameters.maxConfirmableResponses {
            message.type = .confirmable
            outgoingResponseCount += 1
            return startConfirmable(key: responseKey, datagram: message.encode(), purpose: .separateResponse, now: now, jitter: jitter)
        }
        message.type = .nonConfirmable
        let datagram = message.encode()
        if exchange.request.type == .nonConfirmable { duplicates.record(key, token: exchange.request.token, reply: datagram, now: now) }
        return [.send(datagram, to: key.peer)]
    }

    /// Acknowledges every confirmable request whose handler took longer than the piggyback
    /// window (its answer will go as a separate response), and schedules the next sweep while a
    /// window is still open. One sweep looks at the requests in flight, at most
    /// `maxRequestsInFlight`; a timer per request woke the event loop once per request, almost
    /// always for one long answered.
    mutating func piggybackWindowsElapsed(now: NIODeadline) -> [Action] {
        var elapsed: [MessageKey] = []
        var next: NIODeadline?
        for (key, exchange) in serverExchanges {
            guard let deadline = exchange.piggybackDeadline else { continue }
            if deadline <= now {
                elapsed.append(key)
            } else {
                next = min(next ?? deadline, deadline)
            }
        }
        var actions = elapsed.flatMap { acknowledgeSeparately($0, now: now) }
        if let next { actions.append(.schedulePiggybackSweep(at: next)) }
        return actions
    }

    private mutating func acknowledgeSeparately(_ key: MessageKey, now: NIODeadline) -> [Action] {
        guard let exchange = serverExchanges[key] else { return [] }
        serverExchanges[key]?.acknowledged = true
        serverExchanges[key]?.piggybackDeadline = nil
        let ack = CoAPMessage.empty(.acknowledgement, messageID: key.messageID).encode()
        duplicates.record(key, token: exchange.request.token, reply: ack, now: now)
        return [.send(ack, to: key.peer)]
    }

    // MARK: - Retransmission

    private mutating func startConfirmable(
        key: MessageKey, datagram: [UInt8], purpose: ConfirmablePurpose, now: NIODeadline, jitter: Double
    ) -> [Action] {
        let timeout = parameters.initialTimeout(jitter: jitter)
        outgoing[key] = OutgoingConfirmable(datagram: datagram, purpose: purpose, retransmissions: 0, timeout: timeout, deadline: now + timeout)
        return [.send(datagram, to: key.peer), .scheduleRetransmissionCheck(at: now + timeout)]
    }

    /// The retransmission timer fired: each confirmable whose deadline has passed is sent again
    /// with its timeout doubled, or given up after MAX_RETRANSMIT. Also says when to look again:
    /// the earliest deadline left, but no sooner than `retransmissionCheckSlack`, so this scan of
    /// the confirmables in flight (which `maxPendingRequests` and `maxConfirmableResponses`
    /// bound) runs at most that often. `retransmitted` counts the datagrams sent again.
    mutating func retransmissionsDue(now: NIODeadline, jitter: Double) -> (actions: [Action], retransmitted: Int) {
        var actions: [Action] = []
        var retransmitted = 0
        for key in outgoing.compactMap({ $0.value.deadline <= now ? $0.key : nil }) {
            guard var entry = outgoing[key] else { continue }  // finished by an earlier one's give-up
            guard entry.retransmissions < parameters.maxRetransmit else {
                outgoing[key] = nil
                switch entry.purpose {
                case .request(let token):
                    actions += finishClientExchange(token: token, result: .failure(.timeout), now: now, jitter: jitter)
                case .separateResponse:
                    outgoingResponseCount -= 1
                }
                continue
            }
            entry.retransmissions += 1
            entry.timeout = entry.timeout + entry.timeout
            entry.deadline = now + entry.timeout
            outgoing[key] = entry
            actions.append(.send(entry.datagram, to: key.peer))
            retransmitted += 1
        }
        if let next = outgoing.values.lazy.map(\.deadline).min() {
            actions.append(.scheduleRetransmissionCheck(at: max(next, now + parameters.retransmissionCheckSlack)))
        }
        return (actions, retransmitted)
    }

    // MARK: - Receiving

    /// One datagram arrived from `peer`.
    mutating func datagramReceived(_ bytes: [UInt8], from peer: SocketAddress, now: NIODeadline, jitter: Double) -> [Action] {
        let message: CoAPMessage
        do {
            message = try CoAPMessage.decode(bytes)
        } catch {
            // RFC 7252 §4.2/§4.3: a malformed CON is rejected with RST; anything else is silently ignored.
            guard error.type == .confirmable, let messageID = error.messageID else { return [] }
            return [.send(CoAPMessage.empty(.reset, messageID: messageID).encode(), to: peer)]
        }
        switch message.type {
        case .confirmable, .nonConfirmable:
            return receivedConfirmableOrNon(message, from: peer, now: now, jitter: jitter)
        case .acknowledgement:
            return receivedAcknowledgement(message, from: peer, now: now, jitter: jitter)
        case .reset:
            return receivedReset(message, from: peer, now: now, jitter: jitter)
        }
    }

    /// A datagram longer than the receive buffer arrived; `prefix` is what fit. A request is
    /// answered 4.13 with the largest acceptable size in Size1; anything else is treated as malformed.
    mutating func oversizedDatagramReceived(
        _ prefix: [UInt8], from peer: SocketAddress, acceptableSize: Int, now: NIODeadline
    ) -> [Action] {
        guard let message = try? CoAPMessage.decode(prefix), message.isRequest,
              message.type == .confirmable || message.type == .nonConfirmable
        else {
            guard prefix.count >= 4, prefix[0] >> 4 == 0b0100 else { return [] }  // version 1, CON
            let messageID = UInt16(prefix[2]) << 8 | UInt16(prefix[3])
            return [.send(CoAPMessage.empty(.reset, messageID: messageID).encode(), to: peer)]
        }
        let key = MessageKey(peer: peer, messageID: message.messageID)
        if let datagram = duplicates.reply(to: key, token: message.token, now: now) { return [.send(datagram, to: peer)] }
        var tooLarge = CoAPMessage(type: .acknowledgement, code: .requestEntityTooLarge, messageID: 0)
        tooLarge.setUIntOption(.size1, UInt32(clamping: acceptableSize))
        // RFC 7959 §2.9.3: the Block1 option says which block size to use instead.
        tooLarge.setBlock1(BlockOption(number: 0, more: false, sizeExponent: BlockOption.maxSizeExponent))
        return answerImmediately(message, key: key, response: tooLarge, now: now)
    }

    private mutating func receivedConfirmableOrNon(
        _ message: CoAPMessage, from peer: SocketAddress, now: NIODeadline, jitter: Double
    ) -> [Action] {
        let key = MessageKey(peer: peer, messageID: message.messageID)
        let isConfirmable = message.type == .confirmable
        if message.isEmpty {
            // A CON ping is answered with RST (RFC 7252 §4.3); an Empty NON is a format error.
            return isConfirmable ? [.send(CoAPMessage.empty(.reset, messageID: message.messageID).encode(), to: peer)] : []
        }
        if let inFlight = serverExchanges[key] {
            // Another request under this Message ID is still being handled: either this is its
            // retransmission, or a restarted peer reused the ID. The second must not take over the
            // first one's exchange (its response would go to the wrong request): reject it.
            guard inFlight.request.token == message.token else {
                return isConfirmable ? [.send(CoAPMessage.empty(.reset, messageID: message.messageID).encode(), to: peer)] : []
            }
            // A retransmission while the handler works: acknowledge now, respond separately.
            guard isConfirmable else { return [] }
            if inFlight.acknowledged { return [.send(CoAPMessage.empty(.acknowledgement, messageID: message.messageID).encode(), to: peer)] }
            return acknowledgeSeparately(key, now: now)
        }
        if let datagram = duplicates.reply(to: key, token: message.token, now: now) {
            return [.send(datagram, to: peer)]
        }

        if message.isRequest {
            return receivedRequest(message, key: key, now: now)
        }
        return receivedSeparateResponse(message, key: key, now: now, jitter: jitter)
    }

    private mutating func receivedRequest(_ message: CoAPMessage, key: MessageKey, now: NIODeadline) -> [Action] {
        if let unknown = message.options.first(where: { $0.number.isCritical && !Self.recognizedOptions.contains($0.number) }) {
            return answerImmediately(message, key: key, code: .badOption, diagnostic: "unrecognized critical option \(unknown.number)", now: now)
        }
        guard serverExchanges.count < parameters.maxRequestsInFlight else {
            var overloaded = CoAPMessage(type: .acknowledgement, code: .serviceUnavailable, messageID: 0)
            overloaded.setUIntOption(.maxAge, parameters.overloadMaxAge)
            return answerImmediately(message, key: key, response: overloaded, now: now)
        }
        var exchange = ServerExchange(request: message)
        var actions: [Action] = [.deliverRequest(IncomingRequest(message: message, peer: key.peer))]
        if message.type == .confirmable {
            let deadline = now + parameters.piggybackWindow
            exchange.piggybackDeadline = deadline
            actions.append(.schedulePiggybackSweep(at: deadline))
        }
        serverExchanges[key] = exchange
        return actions
    }

    private mutating func answerImmediately(_ request: CoAPMessage, key: MessageKey, code: CoAPCode, diagnostic: String, now: NIODeadline) -> [Action] {
        // The diagnostic is cut to the request's own size, so a spoofed source cannot use us to
        // amplify traffic (RFC 7252 §11.3).
        let budget = max(0, request.encode().count - 4 - request.token.count - 1)  // header, token, payload marker
        let response = CoAPMessage(type: .acknowledgement, code: code, messageID: 0, payload: Array(diagnostic.utf8.prefix(budget)))
        return answerImmediately(request, key: key, response: response, now: now)
    }

    private mutating func answerImmediately(_ request: CoAPMessage, key: MessageKey, response: CoAPMessage, now: NIODeadline) -> [Action] {
        var message = response
        message.token = request.token
        if request.type == .confirmable {
            message.type = .acknowledgement
            message.messageID = request.messageID
        } else {
            message.type = .nonConfirmable
            message.messageID = makeMessageID()
        }
        let datagram = message.encode()
        duplicates.record(key, token: request.token, reply: datagram, now: now)
        return [.send(datagram, to: key.peer)]
    }

    private mutating func receivedSeparateResponse(
        _ message: CoAPMessage, key: MessageKey, now: NIODeadline, jitter: Double
    ) -> [Action] {
        let isConfirmable = message.type == .confirmable
        guard let exchange = clientExchanges[message.token], exchange.peer == key.peer,
              message.isResponse, !isQueued(exchange)
        else {
            // Nobody asked for this: reject a CON with RST (RFC 7252 §5.3.2), ignore a NON.
            guard isConfirmable else { return [] }
            let reset = CoAPMessage.empty(.reset, messageID: message.messageID).encode()
            duplicates.record(key, token: message.token, reply: reset, now: now)
            return [.send(reset, to: key.peer)]
        }
        var actions: [Action] = []
        if isConfirmable {
            let ack = CoAPMessage.empty(.acknowledgement, messageID: message.messageID).encode()
            duplicates.record(key, token: message.token, reply: ack, now: now)
            actions.append(.send(ack, to: key.peer))
        }
        // A response may overtake a lost empty ACK; it acknowledges the request all the same.
        return actions + finishClientExchange(token: message.token, result: .success(message), now: now, jitter: jitter)
    }

    private func isQueued(_ exchange: ClientExchange) -> Bool {
        if case .queued = exchange.state { return true }
        return false
    }

    private mutating func receivedAcknowledgement(
        _ message: CoAPMessage, from peer: SocketAddress, now: NIODeadline, jitter: Double
    ) -> [Action] {
        let key = MessageKey(peer: peer, messageID: message.messageID)
        guard let entry = outgoing[key] else { return [] }  // a duplicate or late ACK
        switch entry.purpose {
        case .separateResponse:
            outgoing[key] = nil
            outgoingResponseCount -= 1
            return []
        case .request(let token):
            if message.isEmpty {
                outgoing[key] = nil
                clientExchanges[token]?.state = .awaitingSeparateResponse
                return releaseSlot(of: peer, now: now, jitter: jitter)
                    + [.scheduleSeparateResponseTimeout(token: token, at: now + parameters.separateResponseTimeout)]
            }
            // A piggybacked response must echo the token; otherwise it belongs to no one.
            guard message.token == token, message.isResponse else { return [] }
            return finishClientExchange(token: token, result: .success(message), now: now, jitter: jitter)
        }
    }

    private mutating func receivedReset(
        _ message: CoAPMessage, from peer: SocketAddress, now: NIODeadline, jitter: Double
    ) -> [Action] {
        let key = MessageKey(peer: peer, messageID: message.messageID)
        guard let entry = outgoing[key] else { return [] }
        switch entry.purpose {
        case .separateResponse:
            outgoing[key] = nil
            outgoingResponseCount -= 1
            return []
        case .request(let token):
            return finishClientExchange(token: token, result: .failure(.reset), now: now, jitter: jitter)
        }
    }

    /// Fails every pending request; used when the endpoint closes.
    mutating func close() -> [Action] {
        let tokens = Array(clientExchanges.keys)
        clientExchanges = [:]
        queuedTokens = [:]
        outstanding = [:]
        outgoing = [:]
        serverExchanges = [:]
        outgoingResponseCount = 0
        return tokens.map { .completeRequest(token: $0, .failure(.closed)) }
    }

    // MARK: - Identifiers

    private mutating func makeMessageID() -> UInt16 {
        defer { nextMessageID &+= 1 }
        return nextMessageID
    }

    /// Tokens are 8 bytes from a seeded counter passed through a bijective mix: unique for the
    /// endpoint's lifetime, and with a random seed not guessable off-path (RFC 7252 §5.3.1).
    private mutating func makeToken() -> [UInt8] {
        nextToken &+= 1
        var mixed = nextToken &* 0x9E37_79B9_7F4A_7C15
        mixed ^= mixed >> 31
        return withUnsafeBytes(of: mixed.bigEndian, Array.init)
    }

    /// Critical options a request may carry; any other odd-numbered option gets 4.02.
    static let recognizedOptions: Set<CoAPOptionNumber> = [
        .uriHost, .uriPort, .uriPath, .uriQuery, .accept, .block1, .block2, .ifMatch, .ifNoneMatch,
    ]
}
