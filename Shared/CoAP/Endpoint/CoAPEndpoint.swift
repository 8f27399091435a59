import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One CoAP endpoint on one UDP socket: it sends requests (with retransmission and block-wise
/// transfer) and, when serving, hands whole incoming requests to the application.
public final class CoAPEndpoint: Sendable {
    /// What an endpoint is allowed to hold and how it times its messages.
    public struct Configuration: Sendable {
        public var transmission = CoAPTransmissionParameters()
        /// Largest request body accepted, assembled from Block1 blocks if need be.
        public var maxBodySize = 64 * 1024
        /// Largest response body a request of ours accepts, assembled from Block2 blocks.
        public var maxResponseBodySize = 1024 * 1024
        /// Block size for bodies that do not fit one datagram (16-1024).
        public var blockSize = 1024
        /// Bytes the block layer holds for transfers in progress (assembled Block1 bodies and
        /// cached Block2 answers); at the bound the oldest are dropped.
        public var blockwiseCacheBytes = 16 * 1024 * 1024
        /// Whole requests waiting for the application; beyond it they are answered 5.03.
        public var requestQueueCapacity = 1024
        /// The UDP receive buffer per read; a datagram that fills it is treated as oversized.
        public var maxDatagramSize = 8 * 1024
        /// Datagrams a serving endpoint takes from the kernel in one system call (recvmmsg).
        public var datagramsPerRead = 16
        /// Kernel socket buffer sizes; bursts beyond them are dropped by the kernel.
        public var socketBufferSize = 4 * 1024 * 1024
        /// Faults to inject into this endpoint's datagrams (tests and the simulator only); they
        /// act on what the socket carries, so below the security layer.
        public var faults: DatagramFaults?
        /// DTLS (or another security layer) between the socket and CoAP; nil for clear text.
        public var security: (any DatagramSecurity)?
        /// Where the endpoint counts retransmissions and injected faults; may be shared.
        public var counters: CoAPCounters?

        public init() {}
    }

    public let localAddress: SocketAddress
    public let configuration: Configuration
    private let channel: any Channel
    /// The loop that owns the socket: a task that runs there sends and hears its answers
    /// without a thread hand-off.
    public var eventLoop: any EventLoop { channel.eventLoop }
    private let handler: NIOLoopBound<CoAPChannelHandler>
    /// Whole incoming requests; present only on a serving endpoint.
    private let incoming: AsyncStream<IncomingRequest>?
    private let block1Turns = TurnGate()
    /// Answers handed over by request handlers that the event loop has not sent yet: whoever
    /// finds it empty wakes the loop once, and the loop sends all of them with one flush.
    /// Bounded by the requests being served (`serve`'s `maxConcurrentRequests`).
    private let unsentResponses = Mutex<[(IncomingRequest, CoAPMessage)]>([])

    private init(
        channel: any Channel,
        handler: NIOLoopBound<CoAPChannelHandler>,
        incoming: AsyncStream<IncomingRequest>?,
        configuration: Configuration
    ) throws {
        guard let address = channel.localAddress else { throw CoAPClientError.closed }
        self.channel = channel
        self.handler = handler
        self.incoming = incoming
        self.configuration = configuration
        self.localAddress = address
    }

    /// Binds a UDP socket. A `serving` endpoint queues incoming requests for `serve(_:)`;
    /// otherwise it answers them 5.01.
    public static func bind(
        host: String,
        port: Int,
        serving: Bool,
        configuration: Configuration = Configuration(),
        reusePort: Bool = false,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> CoAPEndpoint {
        let (stream, continuation) = serving
            ? AsyncStream<IncomingRequest>.makeStream(bufferingPolicy: .bufferingOldest(configuration.requestQueueCapacity))
            : (nil, nil)
        let loop = group.next()
        let handlerPromise = loop.makePromise(of: NIOLoopBound<CoAPChannelHandler>.self)
        // No SO_REUSEADDR: on Linux it lets the kernel hand one ephemeral UDP port to two sockets,
        // and one of them then receives the other's responses.
        let bootstrap = DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(configuration.socketBufferSize))
            .channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(configuration.socketBufferSize))
            // A serving endpoint reads bursts with one recvmmsg: each datagram gets a slice
            // of maxDatagramSize. An endpoint that only sends (a device) reads one at a time.
            .channelOption(.datagramVectorReadMessageCount, value: serving ? configuration.datagramsPerRead : 1)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: configuration.maxDatagramSize * (serving ? configuration.datagramsPerRead : 1)))
            .channelOption(.maxMessagesPerRead, value: 16)
            .channelInitializer { channel in
                let handler = CoAPChannelHandler(
                    parameters: configuration.transmission,
                    maxBodySize: configuration.maxBodySize,
                    blockSize: configuration.blockSize,
                    blockwiseCacheBytes: configuration.blockwiseCacheBytes,
                    maxDatagramSize: configuration.maxDatagramSize,
                    requestSink: continuation,
                    counters: configuration.counters
                )
                do {
                    if let faults = configuration.faults {
                        try channel.pipeline.syncOperations.addHandler(DatagramFaultHandler(faults: faults, counters: configuration.counters))
                    }
                    if let security = configuration.security {
                        let layer = security.makeLayer(on: channel.eventLoop)
                        try channel.pipeline.syncOperations.addHandler(layer.handler)
                        handler.peerIdentity = layer.peerIdentity
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                } catch {
                    handlerPromise.fail(error)
                    return channel.eventLoop.makeFailedFuture(error)
                }
                handlerPromise.succeed(NIOLoopBound(handler, eventLoop: channel.eventLoop))
                return channel.eventLoop.makeSucceededVoidFuture()
            }
        let channel: any Channel
        do {
            channel = try await (reusePort ? bootstrap.channelOption(ChannelOptions.Types.SocketOption(level: .socket, name: .init(rawValue: SO_REUSEPORT)), value: 1) : bootstrap)
                .bind(host: host, port: port).get()
        } catch {
            handlerPromise.fail(error)
            continuation?.finish()
            throw error
        }
        let handler = try await handlerPromise.futureResult.get()
        return try CoAPEndpoint(channel: channel, handler: handler, incoming: stream, configuration: configuration)
    }

    /// (peer, Message ID) pairs the deduplication cache holds now; never above
    /// `configuration.transmission.deduplicationCapacity`. 0 once closed.
    public func rememberedMessages() async -> Int {
        let handler = self.handler
        return (try? await channel.eventLoop.submit { handler.value.rememberedMessages }.get()) ?? 0
    }

    /// Closes the socket; pending requests fail with `.closed` and `serve` returns.
    public func close() async {
        try? await channel.close()
    }

    // MARK: - Client

    /// One request/response exchange, with no block-wise handling: a Confirmable request,
    /// retransmitted until acknowledged, answered piggybacked or separately.
    public func exchange(_ request: CoAPMessage, with peer: SocketAddress) async throws(CoAPClientError) -> CoAPMessage {
        guard !Task.isCancelled else { throw .cancelled }
        let promise = channel.eventLoop.makePromise(of: CoAPMessage.self)
        // Cancellation may be seen on the loop before the exchange starts; the box records it so
        // the exchange then never starts, instead of running its full retransmission schedule.
        let state = NIOLoopBoundBox.makeEmptyBox(valueType: ExchangeState.self, eventLoop: channel.eventLoop)
        let handler = self.handler
        do {
            return try await withTaskCancellationHandler {
                channel.eventLoop.execute {
                    guard state.value == nil else {
                        promise.fail(CoAPClientError.cancelled)
                        return
                    }
                    state.value = handler.value.startExchange(request, to: peer, promise: promise).map(ExchangeState.started) ?? .cancelled
                }
                return try await promise.futureResult.get()
            } onCancel: {
                channel.eventLoop.execute {
                    if case .started(let token) = state.value { handler.value.cancelExchange(token: token) }
                    state.value = .cancelled
                }
            }
        } catch let error as CoAPClientError {
            throw error
        } catch {
            throw .closed
        }
    }

    private enum ExchangeState: Equatable {
        case started([UInt8])
        case cancelled
    }

    /// Sends a request of any size and returns the whole response: a body larger than one block
    /// goes out in Block1 blocks, and a Block2 response is fetched to its end (RFC 7959).
    ///
    /// A server tells transfers apart only by peer and URI, so this endpoint's Block1 transfers
    /// take turns (two at once would interleave into one body). Each cached Block2 body carries
    /// an ETag; if it changes mid-transfer a GET starts again, anything else fails.
    public func request(_ request: CoAPMessage, to peer: SocketAddress) async throws(CoAPClientError) -> CoAPMessage {
        let usesBlock1 = request.payload.count > 1 << (Int(BlockOption.sizeExponent(forBlockSize: configuration.blockSize)) + 4)
        if usesBlock1 { await block1Turns.enter() }
        do {
            var attempt = 0
            while true {
                do {
                    let response = try await transfer(request, to: peer)
                    if usesBlock1 { await block1Turns.leave() }
                    return response
                } catch .resourceChanged where request.code == .get && attempt < Self.maxBlock2Restarts {
                    attempt += 1
                }
            }
        } catch {
            if usesBlock1 { await block1Turns.leave() }
            throw error.publicError
        }
    }

    /// What can go wrong inside one transfer; `resourceChanged` may be retried by the caller.
    private enum TransferError: Error {
        case failed(CoAPClientError)
        case resourceChanged

        var publicError: CoAPClientError {
            switch self {
            case .failed(let error): error
            case .resourceChanged: .blockwise("the resource changed during the transfer (ETag differs)")
            }
        }
    }

    private static let maxBlock2Restarts = 2

    private func transfer(_ request: CoAPMessage, to peer: SocketAddress) async throws(TransferError) -> CoAPMessage {
        func attempt<T>(_ body: () async throws(CoAPClientError) -> T) async throws(TransferError) -> T {
            do { return try await body() } catch { throw .failed(error) }
        }
        var sizeExponent = BlockOption.sizeExponent(forBlockSize: configuration.blockSize)
        var response: CoAPMessage
        if request.payload.count > 1 << (Int(sizeExponent) + 4) {
            response = try await attempt { () async throws(CoAPClientError) in try await sendBlock1(request, to: peer, sizeExponent: &sizeExponent) }
        } else {
            response = try await attempt { () async throws(CoAPClientError) in try await exchange(request, with: peer) }
        }
        let block2: BlockOption?
        do { block2 = try response.block2() } catch { throw .failed(.blockwise("malformed Block2 option in response")) }
        guard let first = block2, first.more, response.code.isSuccess else { return response }
        guard first.number == 0 else { throw .failed(.blockwise("first response block is number \(first.number)")) }

        var body = response.payload
        var current = first
        while current.more {
            var follow = request
            follow.payload = []
            follow.removeOption(.block1)
            follow.removeOption(.size1)
            follow.setBlock2(BlockOption(number: UInt32(body.count / current.size), more: false, sizeExponent: current.sizeExponent))
            let part = try await attempt { () async throws(CoAPClientError) in try await exchange(follow, with: peer) }
            guard part.code.isSuccess else { return part }
            let received: BlockOption?
            do { received = try part.block2() } catch { throw .failed(.blockwise("malformed Block2 option in response")) }
            guard let received, received.offset == body.count else {
                throw .failed(.blockwise("asked for the block at byte \(body.count), got \(part.block2Description)"))
            }
            guard part.optionValue(.eTag) == response.optionValue(.eTag) else { throw .resourceChanged }
            body += part.payload
            guard body.count <= configuration.maxResponseBodySize else {
                throw .failed(.blockwise("response body exceeds \(configuration.maxResponseBodySize) bytes"))
            }
            guard !received.more || part.payload.count == received.size else {
                throw .failed(.blockwise("block \(received.number) is \(part.payload.count) bytes, not \(received.size)"))
            }
            current = received
        }
        response.payload = body
        response.removeOption(.block2)
        return response
    }

    private static let maxBlock1Restarts = 2

    private func sendBlock1(
        _ request: CoAPMessage, to peer: SocketAddress, sizeExponent: inout UInt8
    ) async throws(CoAPClientError) -> CoAPMessage {
        let body = request.payload
        var offset = 0
        var restarts = 0
        while true {
            let size = 1 << (Int(sizeExponent) + 4)
            guard offset / size <= Int(BlockOption.maxNumber) else {
                throw .invalidRequest("a \(body.count)-byte body does not fit in \(size)-byte blocks")
            }
            let end = min(offset + size, body.count)
            let more = end < body.count
            var part = request
            part.payload = Array(body[offset..<end])
            part.setBlock1(BlockOption(number: UInt32(offset / size), more: more, sizeExponent: sizeExponent))
            if offset == 0 { part.setUIntOption(.size1, UInt32(clamping: body.count)) }
            let response = try await exchange(part, with: peer)
            // 4.08: the server lost the blocks so far (expired or evicted under load); start again.
            if response.code == .requestEntityIncomplete && offset > 0 && restarts < Self.maxBlock1Restarts {
                restarts += 1
                offset = 0
                continue
            }
            guard more else { return response }
            guard response.code == .continue else { return response }
            // The server may ask for smaller blocks (RFC 7959 §2.5); later offsets stay aligned.
            if let granted = try? response.block1(), granted.sizeExponent < sizeExponent {
                sizeExponent = granted.sizeExponent
            }
            offset = end
        }
    }

    // MARK: - Server

    /// Serves incoming requests until the endpoint closes, running at most `maxConcurrentRequests`
    /// handlers at once; further requests wait in the bounded queue, then get 5.03. The handlers
    /// run on the socket's event loop, so its group must outlive `serve` (a loop that has shut
    /// down drops their jobs, and `serve` would never return).
    public func serve(maxConcurrentRequests: Int = 256, _ handler: some CoAPRequestHandler) async {
        guard let incoming else { return }
        // This loop and each request's task (a child inherits the preference) run on the
        // socket's event loop, where the datagram was read and the answer is written (see
        // `EventLoopTaskExecutor`).
        await withTaskExecutorPreference(EventLoopTaskExecutor(channel.eventLoop)) {
            await serveRequests(from: incoming, maxConcurrentRequests: maxConcurrentRequests, handler)
        }
    }

    private func serveRequests(from incoming: AsyncStream<IncomingRequest>, maxConcurrentRequests: Int, _ handler: some CoAPRequestHandler) async {
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for await request in incoming {
                if running >= maxConcurrentRequests {
                    await group.next()
                    running -= 1
                }
                running += 1
                group.addTask {
                    let response = await handler.handle(request)
                    self.respond(to: request, with: response)
                }
            }
        }
    }

    /// Answers a request taken from this endpoint; type, Message ID and token are filled in.
    public func respond(to request: IncomingRequest, with response: CoAPMessage) {
        let wakeLoop = unsentResponses.withLock { unsent in
            unsent.append((request, response))
            return unsent.count == 1
        }
        guard wakeLoop else { return }
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.respond(self.unsentResponses.withLock { unsent in
                defer { unsent.removeAll(keepingCapacity: true) }
                return unsent
            })
        }
    }
}

/// Answers whole CoAP requests.
public protocol CoAPRequestHandler: Sendable {
    /// The response to `request`; only its code, options and payload are used.
    func handle(_ request: IncomingRequest) async -> CoAPMessage
}

extension CoAPMessage {
    /// A response for `CoAPRequestHandler`: type, Message ID and token are filled in on sending.
    public static func response(_ code: CoAPCode, payload: [UInt8] = [], contentFormat: UInt32? = nil) -> CoAPMessage {
        var message = CoAPMessage(type: .acknowledgement, code: code, messageID: 0, payload: payload)
        if let contentFormat { message.setUIntOption(.contentFormat, contentFormat) }
        return message
    }

    /// A request with its URI path and query split into options.
    public static func request(_ method: CoAPCode, path: String, query: [String] = [], payload: [UInt8] = [], contentFormat: UInt32? = nil) -> CoAPMessage {
        var message = CoAPMessage(type: .confirmable, code: method, messageID: 0, payload: payload)
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        message.options = segments.map { CoAPOption(number: .uriPath, string: String($0)) }
        message.options += query.map { CoAPOption(number: .uriQuery, string: $0) }
        if let contentFormat { message.setUIntOption(.contentFormat, contentFormat) }
        return message
    }

    var block2Description: String {
        (try? block2()).flatMap { $0?.description } ?? "no Block2 option"
    }
}
