import NIOCore

/// The server side of block-wise transfer (RFC 7959), between the message layer and the
/// application: it assembles Block1 request bodies, so the application sees whole bodies, and
/// slices large responses into Block2 blocks, serving the later blocks from a cache.
///
/// Bounds: an assembled body is at most `maxBodySize` (beyond it 4.13 with Size1); at most
/// `maxTransfers` assemblies and cached responses live at once, holding at most `maxBytes` of
/// bodies between them, each for `lifetime`. At either bound the transfer closest to expiry is
/// dropped: its client gets 4.08 and starts over (a GET's later block is answered again and
/// sliced). A response larger than `maxBytes` alone is not cached: its first block goes out,
/// and a GET's later blocks are regenerated.
struct BlockwiseServer {
    enum Decision: Equatable {
        /// A whole request for the application (Block1 assembled, if it was block-wise).
        case deliver(CoAPMessage)
        /// An answer the block layer gives itself: 2.31 Continue, a cached block, or an error.
        case respond(CoAPMessage)
    }

    /// Which transfer a block belongs to: same peer, method and target URI (RFC 7959 §2.3).
    private struct TransferKey: Hashable {
        var peer: SocketAddress
        var method: CoAPCode
        var target: [CoAPOption]
    }

    private struct Assembly {
        var body: [UInt8]
        var expiry: NIODeadline
    }

    private struct CachedResponse {
        var response: CoAPMessage
        var expiry: NIODeadline
    }

    let maxBodySize: Int
    let preferredSizeExponent: UInt8
    let maxTransfers: Int
    let maxBytes: Int
    let lifetime: TimeAmount
    private var assemblies: [TransferKey: Assembly] = [:]
    private var responses: [TransferKey: CachedResponse] = [:]
    /// Body bytes of every assembly and cached response.
    private(set) var heldBytes = 0
    private var nextSweep = NIODeadline.uptimeNanoseconds(0)
    private var nextETag: UInt32 = 0

    init(maxBodySize: Int, preferredBlockSize: Int = 1024, maxTransfers: Int = 1024, maxBytes: Int = 16 * 1024 * 1024, lifetime: TimeAmount = .seconds(60)) {
        self.maxBodySize = maxBodySize
        self.preferredSizeExponent = BlockOption.sizeExponent(forBlockSize: preferredBlockSize)
        self.maxTransfers = maxTransfers
        self.maxBytes = maxBytes
        self.lifetime = lifetime
    }

    var activeTransfers: Int { assemblies.count + responses.count }

    private static func key(_ request: CoAPMessage, peer: SocketAddress) -> TransferKey {
        TransferKey(peer: peer, method: request.code, target: request.options.filter { $0.number == .uriPath || $0.number == .uriQuery })
    }

    /// A request arrived (after deduplication).
    mutating func requestReceived(_ request: CoAPMessage, from peer: SocketAddress, now: NIODeadline) -> Decision {
        expire(now: now)
        let block1: BlockOption?
        let block2: BlockOption?
        do {
            block1 = try request.block1()
            block2 = try request.block2()
        } catch {
            return .respond(Self.error(.badOption, "malformed Block\(error.option == .block1 ? 1 : 2) option", answering: request))
        }
        if let announced = request.uintOption(.size1), announced > maxBodySize {
            return .respond(tooLarge(answering: request))
        }
        // The transfer key is built only for block-wise requests: the common request skips it.
        if let block1 {
            return block1Received(request, block: block1, key: Self.key(request, peer: peer), now: now)
        }
        guard request.payload.count <= maxBodySize else { return .respond(tooLarge(answering: request)) }
        if let block2, block2.number > 0 {
            return laterBlockRequested(request, block: block2, key: Self.key(request, peer: peer))
        }
        return .deliver(request)
    }

    private mutating func block1Received(_ request: CoAPMessage, block: BlockOption, key: TransferKey, now: NIODeadline) -> Decision {
        if block.more && request.payload.count != block.size {
            return .respond(Self.error(.badRequest, "a Block1 block other than the last must be exactly \(block.size) bytes", answering: request))
        }
        var body: [UInt8]
        if block.number == 0 {
            body = []
        } else if let assembly = assemblies[key], assembly.body.count == block.offset {
            body = assembly.body
        } else {
            removeAssembly(key)
            return .respond(Self.error(.requestEntityIncomplete, "Block1 block \(block.number) does not follow the blocks received", answering: request))
        }
        body += request.payload
        guard body.count <= maxBodySize else {
            removeAssembly(key)
            return .respond(tooLarge(answering: request))
        }
        if block.more {
            removeAssembly(key)
            makeRoom(for: body.count, now: now)
            assemblies[key] = Assembly(body: body, expiry: now + lifetime)
            heldBytes += body.count
            var proceed = CoAPMessage(type: .acknowledgement, code: .continue, messageID: 0)
            proceed.setBlock1(block)
            return .respond(proceed)
        }
        removeAssembly(key)
        var whole = request
        whole.payload = body
        return .deliver(whole)
    }

    private func laterBlockRequested(_ request: CoAPMessage, block: BlockOption, key: TransferKey) -> Decision {
        guard let cached = responses[key] else {
            // A GET can be answered again and sliced; other methods must not run twice.
            return request.code == .get
                ? .deliver(request)
                : .respond(Self.error(.requestEntityIncomplete, "no block-wise response to continue; start again at block 0", answering: request))
        }
        guard block.offset < cached.response.payload.count else {
            return .respond(Self.error(.badOption, "Block2 block \(block.number) is past the end of the body", answering: request))
        }
        return .respond(Self.slice(cached.response, block: block))
    }

    /// Shapes the application's response to `request`: echoes a final Block1, and slices a body
    /// larger than one block into Block2 blocks, caching the whole response for the later blocks.
    mutating func prepareResponse(_ response: CoAPMessage, to request: CoAPMessage, from peer: SocketAddress, now: NIODeadline) -> CoAPMessage {
        var shaped = response
        if let block1 = try? request.block1() {
            shaped.setBlock1(BlockOption(number: block1.number, more: false, sizeExponent: block1.sizeExponent))
        }
        let requested = (try? request.block2()) ?? nil
        let exponent = min(requested?.sizeExponent ?? preferredSizeExponent, preferredSizeExponent)
        let size = 1 << (Int(exponent) + 4)
        guard shaped.payload.count > size else { return shaped }

        // A regenerated GET may ask for a later block straight away.
        let offset = requested?.offset ?? 0
        guard offset < shaped.payload.count, offset / size <= Int(BlockOption.maxNumber) else {
            return Self.error(.badOption, "Block2 block starting at byte \(offset) is past the end of the body", answering: request)
        }
        let key = Self.key(request, peer: peer)
        expire(now: now)
        removeResponse(key)
        var cached = shaped
        cached.removeOption(.block1)
        // Each cached body gets its own ETag, so a client whose later blocks come from another
        // response to the same URI (a concurrent transfer replaced it) sees the change.
        if cached.optionValue(.eTag) == nil {
            nextETag &+= 1
            cached.setOption(.eTag, values: [CoAPOption.encodeUInt(nextETag)])
            shaped.setOption(.eTag, values: [CoAPOption.encodeUInt(nextETag)])
        }
        if cached.payload.count <= maxBytes {
            makeRoom(for: cached.payload.count, now: now)
            responses[key] = CachedResponse(response: cached, expiry: now + lifetime)
            heldBytes += cached.payload.count
        }
        let number = UInt32(offset / size)
        var first = Self.slice(shaped, block: BlockOption(number: number, more: false, sizeExponent: exponent))
        first.setUIntOption(.size2, UInt32(clamping: shaped.payload.count))
        return first
    }

    private static func slice(_ response: CoAPMessage, block: BlockOption) -> CoAPMessage {
        var part = response
        let start = min(block.offset, response.payload.count)
        let end = min(start + block.size, response.payload.count)
        part.payload = Array(response.payload[start..<end])
        part.setBlock2(BlockOption(number: block.number, more: end < response.payload.count, sizeExponent: block.sizeExponent))
        return part
    }

    private func tooLarge(answering request: CoAPMessage) -> CoAPMessage {
        var message = CoAPMessage(type: .acknowledgement, code: .requestEntityTooLarge, messageID: 0, payload: Array("body larger than \(maxBodySize) bytes".utf8))
        message.setUIntOption(.size1, UInt32(clamping: maxBodySize))
        return message.fitting(within: request.encode().count, token: request.token)
    }

    /// An answer of the block layer's own. Anyone may draw one with no credentials, so, as in the
    /// message layer, the diagnostic is cut to the request's own size: a spoofed source cannot
    /// use it to amplify traffic (RFC 7252 §11.3).
    private static func error(_ code: CoAPCode, _ diagnostic: String, answering request: CoAPMessage) -> CoAPMessage {
        let budget = max(0, request.encode().count - 4 - request.token.count - 1)  // header, token, payload marker
        return CoAPMessage(type: .acknowledgement, code: code, messageID: 0, payload: Array(diagnostic.utf8.prefix(budget)))
    }

    /// Sweeps expired transfers at most once a second, keeping the common non-block path cheap.
    private mutating func expire(now: NIODeadline) {
        guard now >= nextSweep, !(assemblies.isEmpty && responses.isEmpty) else { return }
        nextSweep = now + .seconds(1)
        for key in assemblies.keys where assemblies[key]!.expiry <= now { removeAssembly(key) }
        for key in responses.keys where responses[key]!.expiry <= now { removeResponse(key) }
    }

    /// Drops transfers closest to expiry until one more, of `bytes`, fits both bounds.
    private mutating func makeRoom(for bytes: Int, now: NIODeadline) {
        while assemblies.count + responses.count >= maxTransfers || heldBytes + bytes > maxBytes {
            let oldestAssembly = assemblies.min { $0.value.expiry < $1.value.expiry }
            let oldestResponse = responses.min { $0.value.expiry < $1.value.expiry }
            switch (oldestAssembly, oldestResponse) {
            case let (assembly?, response?):
                if assembly.value.expiry <= response.value.expiry { removeAssembly(assembly.key) } else { removeResponse(response.key) }
            case let (assembly?, nil): removeAssembly(assembly.key)
            case let (nil, response?): removeResponse(response.key)
            case (nil, nil): return
            }
        }
    }

    private mutating func removeAssembly(_ key: TransferKey) {
        if let removed = assemblies.removeValue(forKey: key) { heldBytes -= removed.body.count }
    }

    private mutating func removeResponse(_ key: TransferKey) {
        if let removed = responses.removeValue(forKey: key) { heldBytes -= removed.response.payload.count }
    }
}
