import NIOCore

/// Carries out the message layer's and block layer's decisions on one UDP channel. Runs on the
/// channel's event loop only; the endpoint reaches it through `NIOLoopBound`.
final class CoAPChannelHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private var layer: MessageLayer
    private var blockwise: BlockwiseServer
    private let maxDatagramSize: Int
    /// Where whole requests go; nil for an endpoint that only sends requests.
    private let requestSink: AsyncStream<IncomingRequest>.Continuation?
    private let counters: CoAPCounters?
    private var responsePromises: [[UInt8]: EventLoopPromise<CoAPMessage>] = [:]
    private var context: ChannelHandlerContext?
    private var isClosed = false
    /// The security layer's answer to who a peer is (DTLS); nil on a clear-text endpoint.
    var peerIdentity: ((SocketAddress) -> String?)?
    /// While set, datagrams are written without a flush, and one flush at the end sends them
    /// together (sendmmsg): during a burst of reads, and for a batch of responses.
    private var flushingLater = false
    private var unflushed = false
    /// One timer for the piggyback windows of every request on this socket: it fires
    /// `piggybackSlack` (a fifth of the window) after the earliest window asked for, and the
    /// layer's sweep asks for the next. An empty ACK goes out at most that much late, far inside
    /// the client's first retransmission (2 to 3 s). Only one is armed at a time: the window is
    /// one constant, so a later request's window ends after the armed one.
    private var piggybackSweepArmed = false
    private let piggybackSlack: TimeAmount
    /// The earliest armed retransmission check. Confirmables share these timers: a timer per
    /// message, left to fire after its ACK, filled the loop's timer heap (its pops were 4% of
    /// the simulator's CPU under `scripts/bench-mqtt`). A deadline at most the parameters'
    /// `retransmissionCheckSlack` before the armed one waits for it.
    private var retransmissionCheckAt: NIODeadline?

    init(
        parameters: CoAPTransmissionParameters,
        maxBodySize: Int,
        blockSize: Int,
        blockwiseCacheBytes: Int,
        maxDatagramSize: Int,
        requestSink: AsyncStream<IncomingRequest>.Continuation?,
        counters: CoAPCounters? = nil
    ) {
        self.counters = counters
        layer = MessageLayer(parameters: parameters, seed: UInt64.random(in: .min ... .max))
        piggybackSlack = .nanoseconds(parameters.piggybackWindow.nanoseconds / 5)
        blockwise = BlockwiseServer(maxBodySize: maxBodySize, preferredBlockSize: blockSize, maxBytes: blockwiseCacheBytes)
        self.maxDatagramSize = maxDatagramSize
        self.requestSink = requestSink
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeExchanges()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeExchanges()
        context.fireChannelInactive()
    }

    /// Entries in the deduplication cache, for the server's gauge.
    var rememberedMessages: Int { layer.rememberedMessages }

    private static var now: NIODeadline { .now() }
    /// Seeded once: the system generator costs a getrandom system call per draw, and the
    /// retransmission jitter needs no cryptographic strength.
    private var random = SplitMix64(seed: UInt64.random(in: .min ... .max))
    private var jitter: Double { Double.random(in: 0...1, using: &random) }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        flushingLater = true
        let envelope = unwrapInboundIn(data)
        var buffer = envelope.data
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        // A datagram that filled the whole receive buffer may have been cut short by the kernel.
        if bytes.count >= maxDatagramSize {
            perform(layer.oversizedDatagramReceived(bytes, from: envelope.remoteAddress, acceptableSize: blockwise.maxBodySize, now: Self.now))
        } else {
            perform(layer.datagramReceived(bytes, from: envelope.remoteAddress, now: Self.now, jitter: jitter))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushNow()
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP errors and the like surface here for UDP; they must not close the endpoint.
    }

    // MARK: - Requests from the application

    /// Sends one request exchange (no block-wise handling); `promise` gets the response.
    func startExchange(_ request: CoAPMessage, to peer: SocketAddress, promise: EventLoopPromise<CoAPMessage>) -> [UInt8]? {
        guard !isClosed else {
            promise.fail(CoAPClientError.closed)
            return nil
        }
        let (token, actions) = layer.sendRequest(request, to: peer, now: Self.now, jitter: jitter)
        responsePromises[token] = promise
        perform(actions)
        return token
    }

    func cancelExchange(token: [UInt8]) {
        perform(layer.cancelRequest(token: token, now: Self.now, jitter: jitter))
    }

    /// The application's responses to whole requests delivered earlier, sent with one flush.
    func respond(_ responses: [(IncomingRequest, CoAPMessage)]) {
        flushingLater = true
        let now = Self.now
        for (request, response) in responses {
            // Over DTLS, an answer goes only to the association its request came through: if
            // another peer took that address meanwhile (a NAT reusing a port), it is dropped.
            if let peerIdentity, request.peerIdentity != nil, peerIdentity(request.peer) != request.peerIdentity { continue }
            let shaped = blockwise.prepareResponse(response, to: request.message, from: request.peer, now: now)
            perform(layer.respond(to: request.key, with: shaped, now: now, jitter: jitter))
        }
        flushNow()
    }

    private func flushNow() {
        flushingLater = false
        guard unflushed, let context else { return }
        unflushed = false
        context.flush()
    }

    // MARK: - Carrying out actions

    private func perform(_ actions: [MessageLayer.Action]) {
        for action in actions {
            switch action {
            case .send(let datagram, let peer):
                send(datagram, to: peer)
            case .scheduleRetransmissionCheck(let deadline):
                armRetransmissionCheck(at: deadline)
            case .schedulePiggybackSweep(let deadline):
                armPiggybackSweep(at: deadline)
            case .scheduleSeparateResponseTimeout(let token, let deadline):
                schedule(at: deadline) { handler in
                    handler.perform(handler.layer.separateResponseTimedOut(token: token, now: Self.now, jitter: handler.jitter))
                }
            case .deliverRequest(let request):
                deliver(request)
            case .completeRequest(let token, let result):
                guard let promise = responsePromises.removeValue(forKey: token) else { continue }
                switch result {
                case .success(let response): promise.succeed(response)
                case .failure(let error): promise.fail(error)
                }
            }
        }
    }

    private func deliver(_ request: IncomingRequest) {
        switch blockwise.requestReceived(request.message, from: request.peer, now: Self.now) {
        case .respond(let response):
            perform(layer.respond(to: request.key, with: response, now: Self.now, jitter: jitter))
        case .deliver(let whole):
            var assembled = request
            assembled.message = whole
            assembled.peerIdentity = peerIdentity?(request.peer)
            guard let requestSink else {
                let refusal = CoAPMessage(type: .acknowledgement, code: .notImplemented, messageID: 0, payload: Array("this endpoint serves no resources".utf8))
                perform(layer.respond(to: request.key, with: refusal, now: Self.now, jitter: jitter))
                return
            }
            switch requestSink.yield(assembled) {
            case .enqueued:
                break
            case .dropped, .terminated:
                // Queue full, or nobody serves any more: say so now rather than leave the peer waiting.
                var overloaded = CoAPMessage(type: .acknowledgement, code: .serviceUnavailable, messageID: 0)
                overloaded.setUIntOption(.maxAge, layer.parameters.overloadMaxAge)
                perform(layer.respond(to: request.key, with: overloaded, now: Self.now, jitter: jitter))
            @unknown default:
                break
            }
        }
    }

    private func send(_ datagram: [UInt8], to peer: SocketAddress) {
        // A socket that cannot keep up loses the datagram here instead of queueing it without
        // bound; retransmission (ours or the peer's) covers the loss.
        guard let context, !isClosed, context.channel.isWritable else { return }
        let buffer = context.channel.allocator.buffer(bytes: datagram)
        if flushingLater {
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: peer, data: buffer)), promise: nil)
            unflushed = true
        } else {
            context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: peer, data: buffer)), promise: nil)
        }
    }

    private func armPiggybackSweep(at deadline: NIODeadline) {
        guard !piggybackSweepArmed else { return }
        piggybackSweepArmed = true
        schedule(at: deadline + piggybackSlack) { handler in
            handler.piggybackSweepArmed = false
            handler.perform(handler.layer.piggybackWindowsElapsed(now: Self.now))
        }
    }

    private func armRetransmissionCheck(at deadline: NIODeadline) {
        if let armed = retransmissionCheckAt, armed <= deadline + layer.parameters.retransmissionCheckSlack { return }
        retransmissionCheckAt = deadline
        schedule(at: deadline) { handler in
            if handler.retransmissionCheckAt == deadline { handler.retransmissionCheckAt = nil }
            let due = handler.layer.retransmissionsDue(now: Self.now, jitter: handler.jitter)
            if due.retransmitted > 0 { handler.counters?.retransmissions.add(due.retransmitted, ordering: .relaxed) }
            handler.perform(due.actions)
        }
    }

    private func schedule(at deadline: NIODeadline, _ body: @escaping (CoAPChannelHandler) -> Void) {
        guard let context, !isClosed else { return }
        context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            guard !isClosed else { return }
            body(self)
        }
    }

    private func closeExchanges() {
        guard !isClosed else { return }
        perform(layer.close())
        isClosed = true
        for promise in responsePromises.values { promise.fail(CoAPClientError.closed) }
        responsePromises = [:]
        requestSink?.finish()
    }
}
