import CDTLS
import CoAP
import Logging
import NIOCore

/// What a DTLS server endpoint holds and how long.
public struct DTLSServerConfiguration: Sendable {
    public var context: DTLSContext
    /// Where PSK identities find their keys; nil when the server takes certificates only.
    public var keys: PSKKeyCache?
    /// Associations per socket. At the bound one is closed to make room: a handshake under way
    /// first, else the least recently active device (which handshakes again when it next sends).
    public var maxAssociations = 4_096
    /// Handshakes under way per socket; a verified ClientHello beyond it is dropped (the client
    /// sends it again). A handshake costs a public-key operation or a key lookup, so this keeps
    /// a burst of them from crowding out established devices.
    public var maxHandshakes = 256
    /// An association that carries no datagram this long is closed.
    public var idleTimeout: TimeAmount = .minutes(10)
    /// A handshake not finished this long after its verified ClientHello is abandoned.
    public var handshakeTimeout: TimeAmount = .seconds(30)
    /// The largest datagram DTLS writes (RFC 7925 4: fit the path; 1152 as libcoap).
    public var mtu = 1_152
    public var statistics = DTLSStatistics()
    /// Handshake failures at debug level (a failed handshake is a peer's problem, and a flood
    /// of them must not flood the log), each association at trace level.
    public var logger = Logger(label: "courier.dtls")

    public init(context: DTLSContext, keys: PSKKeyCache? = nil) {
        self.context = context
        self.keys = keys
    }
}

/// The server side of CoAP over DTLS: a `DatagramSecurity` for a serving `CoAPEndpoint`.
public struct DTLSServerSecurity: DatagramSecurity {
    public let configuration: DTLSServerConfiguration

    public init(_ configuration: DTLSServerConfiguration) {
        self.configuration = configuration
    }

    public func makeLayer(on eventLoop: any EventLoop) -> SecureDatagramLayer {
        let handler = DTLSServerHandler(configuration: configuration)
        return SecureDatagramLayer(handler: handler) { handler.identity(of: $0) }
    }
}

/// DTLS 1.2 between one UDP channel and CoAP, one association per peer address.
///
/// A peer is unknown until its ClientHello carries a valid cookie: until then every ClientHello
/// goes through one listening SSL per channel (`DTLSv1_listen`), which answers with a
/// HelloVerifyRequest and keeps nothing. Only a ClientHello whose cookie proves the peer
/// receives at its address becomes an association, and only then does OpenSSL allocate for it.
/// Runs on the channel's event loop only.
final class DTLSServerHandler: ChannelDuplexHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias InboundOut = AddressedEnvelope<ByteBuffer>
    typealias OutboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let configuration: DTLSServerConfiguration
    private var statistics: DTLSStatistics { configuration.statistics }
    private var associations: [SocketAddress: DTLSAssociation] = [:]
    private var handshakes = 0
    private var listener: (ssl: OpaquePointer, bio: OpaquePointer)?
    private let listenAddress: OpaquePointer?
    private var context: ChannelHandlerContext?
    private var sweep: Scheduled<Void>?
    private var unflushed = false
    /// Where SSL_read puts plaintext (a record is at most 2^14 bytes).
    private var plaintext = [UInt8](repeating: 0, count: 16_384)

    init(configuration: DTLSServerConfiguration) {
        self.configuration = configuration
        listenAddress = BIO_ADDR_new()
    }

    deinit {
        if let listenAddress { BIO_ADDR_free(listenAddress) }
    }

    /// The proven identity of the association at `peer`, once its handshake has finished.
    func identity(of peer: SocketAddress) -> String? {
        guard let association = associations[peer], association.established else { return nil }
        return association.identity
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        listener = DTLSAssociation.makeSSL(configuration.context, mtu: configuration.mtu)
        scheduleSweep()
    }

    private func scheduleSweep() {
        guard let context else { return }
        sweep = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { [self] in
            expire()
            // A cookie stays valid one to two rotations: a ClientHello captured with its
            // cookie cannot be replayed later to take the address's association.
            _ = cdtls_rotate_cookie_secret_if_older(Int32(Self.cookieSecretSeconds))
            if listener == nil { replaceListener() }
            scheduleSweep()
        }
    }

    /// How long a cookie secret is used before the next (the previous still verifies).
    static let cookieSecretSeconds = 60

    func handlerRemoved(context: ChannelHandlerContext) {
        closeAll()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeAll()
        context.fireChannelInactive()
    }

    private func closeAll() {
        sweep?.cancel()
        sweep = nil
        for association in associations.values { remove(association, notify: false) }
        if let listener {
            SSL_free(listener.ssl)
            self.listener = nil
        }
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let peer = envelope.remoteAddress
        let bytes = envelope.data.readableBytesView
        if let association = associations[peer] {
            // A ClientHello from a known peer: a device that restarted (RFC 6347 4.2.8), or one
            // that lost our first flight. Its association is replaced only if the ClientHello
            // proves the address with a cookie; one without draws a HelloVerifyRequest.
            if DTLSRecords.startsWithClientHello(bytes) {
                _ = listen(bytes, from: peer, replacing: association)
            } else {
                receive(bytes, on: association, context: context)
            }
        } else if DTLSRecords.startsWithClientHello(bytes) {
            _ = listen(bytes, from: peer, replacing: nil)
        } else {
            statistics.droppedDatagrams.add(1, ordering: .relaxed)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    /// Runs a ClientHello through the listening SSL. Without a valid cookie it draws a
    /// HelloVerifyRequest and nothing is kept; with one, the listening SSL (which holds the
    /// ClientHello) becomes the peer's association. Returns whether an association was made.
    private func listen(_ bytes: ByteBufferView, from peer: SocketAddress, replacing old: DTLSAssociation?) -> Bool {
        guard let listener, let listenAddress else { return false }
        DTLSAssociation.cookieInput(peer).withUnsafeBufferPointer { cdtls_datagram_bio_set_peer(listener.bio, $0.baseAddress, $0.count) }
        let result = bytes.withUnsafeBytes { datagram -> Int32 in
            ERR_clear_error()
            cdtls_datagram_bio_stage(listener.bio, datagram.baseAddress?.assumingMemoryBound(to: UInt8.self), datagram.count)
            defer { cdtls_datagram_bio_unstage(listener.bio) }
            return DTLSv1_listen(listener.ssl, listenAddress)
        }
        if result <= 0 {
            if send(from: listener.bio, to: peer) > 0 { statistics.helloVerifyRequests.add(1, ordering: .relaxed) }
            if result < 0 { replaceListener() }
            return false
        }
        // The cookie was valid: the peer receives at this address.
        if let old { remove(old, notify: false) }
        guard handshakes < configuration.maxHandshakes else {
            statistics.droppedDatagrams.add(1, ordering: .relaxed)
            replaceListener()
            return old != nil
        }
        if associations.count >= configuration.maxAssociations, let idlest = associations.values.min(by: Self.evictsFirst) {
            remove(idlest, notify: true)
            statistics.evicted.add(1, ordering: .relaxed)
        }
        let association = DTLSAssociation(peer: peer, ssl: listener.ssl, bio: listener.bio, now: .now())
        self.listener = DTLSAssociation.makeSSL(configuration.context, mtu: configuration.mtu)
        associations[peer] = association
        handshakes += 1
        statistics.associations.add(1, ordering: .relaxed)
        statistics.handshaking.add(1, ordering: .relaxed)
        // The ClientHello is buffered inside the SSL: the handshake goes on without new input.
        advanceHandshake(association)
        return true
    }

    /// At the bound, a handshake still under way goes before an established device (a flood
    /// of peers that pass the cookie but prove nothing cannot push devices out), and among
    /// each, the least recently active first.
    private static func evictsFirst(_ one: DTLSAssociation, _ other: DTLSAssociation) -> Bool {
        if one.established != other.established { return !one.established }
        return one.lastActive < other.lastActive
    }

    private func replaceListener() {
        if let listener { SSL_free(listener.ssl) }
        listener = DTLSAssociation.makeSSL(configuration.context, mtu: configuration.mtu)
    }

    private func receive(_ bytes: ByteBufferView, on association: DTLSAssociation, context: ChannelHandlerContext) {
        association.lastActive = .now()
        if !association.established {
            if association.lookingUp {
                // The rest of the flight waits with the lookup; beyond the bound DTLS resends it.
                if association.held.count < DTLSAssociation.maxHeld { association.held.append(Array(bytes)) }
                return
            }
            if needsKeyLookup(bytes, association) { return }
            bytes.withUnsafeBytes { datagram in association.reading(datagram) { advanceHandshake(association) } }
            return
        }
        let (records, end) = bytes.withUnsafeBytes { datagram in
            association.reading(datagram) { association.readRecords(into: &plaintext, allocator: context.channel.allocator) }
        }
        // A repeated client Finished makes OpenSSL send its last flight again.
        send(from: association.bio, to: association.peer)
        for record in records {
            context.fireChannelRead(wrapInboundOut(AddressedEnvelope(remoteAddress: association.peer, data: record)))
        }
        if end != .drained { remove(association, notify: end == .closedByPeer) }
    }

    /// With a PSK suite, the datagram naming the client's identity waits until its key is
    /// known: OpenSSL asks for the key synchronously, and the store answers asynchronously.
    /// Returns whether the datagram was held.
    private func needsKeyLookup(_ bytes: ByteBufferView, _ association: DTLSAssociation) -> Bool {
        guard let keys = configuration.keys, association.negotiatesPSK, let identity = DTLSRecords.pskIdentity(in: bytes) else { return false }
        if association.resolvedIdentity == identity { return false }
        if let cached = keys.cached(identity) {
            resolve(association, identity: identity, cached)
            return false
        }
        association.held = [Array(bytes)]
        association.lookingUp = true
        guard let context else { return true }
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        let waiting = NIOLoopBound(association, eventLoop: loop)
        configuration.logger.trace("DTLS key lookup", metadata: ["peer": "\(association.peer)", "identity": "\(identity)"])
        Task {
            let lookup = await keys.lookUp(identity)
            loop.execute { handler.value.keyFound(lookup, identity: identity, for: waiting.value) }
        }
        return true
    }

    /// A key lookup's answer, for the association that asked (not one that replaced it since).
    private func keyFound(_ lookup: PSKKeyCache.Lookup, identity: String, for association: DTLSAssociation) {
        configuration.logger.trace("DTLS key found", metadata: ["peer": "\(association.peer)", "identity": "\(identity)", "known": "\(lookup != .unknown)"])
        guard !association.closed, association.lookingUp, associations[association.peer] === association, let context else { return }
        association.lookingUp = false
        resolve(association, identity: identity, lookup)
        let held = association.held
        association.held = []
        for datagram in held where !association.closed {
            if association.established {
                // The rest of the flight (a resent Finished): the record layer answers it.
                receive(ByteBuffer(bytes: datagram).readableBytesView, on: association, context: context)
            } else {
                datagram.withUnsafeBytes { datagram in association.reading(datagram) { advanceHandshake(association) } }
            }
        }
        flushIfNeeded()
    }

    private func resolve(_ association: DTLSAssociation, identity: String, _ lookup: PSKKeyCache.Lookup) {
        association.resolvedIdentity = identity
        // An unknown identity gets no key: OpenSSL then ends the handshake with unknown_psk_identity.
        guard case .known(let key) = lookup else { return }
        _ = key.withUnsafeBufferPointer { cdtls_set_server_psk(association.ssl, identity, $0.baseAddress, $0.count) }
    }

    /// One step of the handshake with what the SSL has been given; sends what it wrote.
    private func advanceHandshake(_ association: DTLSAssociation) {
        guard !association.established, !association.closed else { return }
        let result = SSL_do_handshake(association.ssl)
        send(from: association.bio, to: association.peer)
        if result == 1 {
            association.established = true
            association.identity = association.provenIdentity()
            statistics.negotiated(association.suite)
            configuration.logger.trace("DTLS association", metadata: ["peer": "\(association.peer)", "identity": "\(association.identity ?? "")", "suite": "\(association.suite)"])
            handshakes -= 1
            statistics.handshaking.add(-1, ordering: .relaxed)
            statistics.handshakesCompleted.add(1, ordering: .relaxed)
            association.timer?.cancel()
            association.timer = nil
            return
        }
        let error = SSL_get_error(association.ssl, result)
        guard error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE else {
            statistics.handshakesFailed.add(1, ordering: .relaxed)
            configuration.logger.debug("DTLS handshake failed", metadata: [
                "peer": "\(association.peer)", "identity": "\(association.resolvedIdentity ?? "")", "reason": "\(lastOpenSSLError())",
            ])
            remove(association, notify: false)
            return
        }
        armTimer(association)
    }

    /// Follows OpenSSL's retransmission timer for a flight that may be lost.
    private func armTimer(_ association: DTLSAssociation) {
        association.timer?.cancel()
        association.timer = nil
        let microseconds = cdtls_timeout_microseconds(association.ssl)
        guard microseconds >= 0, let context else { return }
        association.timer = context.eventLoop.assumeIsolated().scheduleTask(in: .microseconds(microseconds)) { [self] in
            guard !association.closed else { return }
            ERR_clear_error()
            let result = cdtls_handle_timeout(association.ssl)
            send(from: association.bio, to: association.peer)
            flushIfNeeded()
            if result < 0 {
                statistics.handshakesFailed.add(1, ordering: .relaxed)
                remove(association, notify: false)
            } else {
                armTimer(association)
            }
        }
    }

    // MARK: - Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let envelope = unwrapOutboundIn(data)
        guard let association = associations[envelope.remoteAddress], association.established, !association.closed else {
            // No secure association with this peer (closed meanwhile): the answer is lost, as
            // on a lossy network; the peer's retransmission finds out.
            promise?.fail(DTLSError("no DTLS association with \(envelope.remoteAddress)"))
            return
        }
        let written = association.write(envelope.data)
        send(from: association.bio, to: association.peer)
        if written {
            promise?.succeed()
        } else {
            promise?.fail(DTLSError.openSSL("DTLS write to \(association.peer) failed"))
        }
    }

    func flush(context: ChannelHandlerContext) {
        unflushed = false
        context.flush()
    }

    /// Writes what OpenSSL queued on `bio` to `peer`; returns how many datagrams.
    @discardableResult
    private func send(from bio: OpaquePointer, to peer: SocketAddress) -> Int {
        guard let context else { return 0 }
        let sent = DTLSAssociation.sendQueued(from: bio, to: peer, through: context)
        unflushed = unflushed || sent > 0
        return sent
    }

    private func flushIfNeeded() {
        guard unflushed, let context else { return }
        unflushed = false
        context.flush()
    }

    // MARK: - Ending associations

    private func remove(_ association: DTLSAssociation, notify: Bool) {
        guard !association.closed else { return }
        association.close(notify: notify) { bio in send(from: bio, to: association.peer) }
        if associations[association.peer] === association { associations.removeValue(forKey: association.peer) }
        statistics.associations.add(-1, ordering: .relaxed)
        if !association.established {
            handshakes -= 1
            statistics.handshaking.add(-1, ordering: .relaxed)
        }
        flushIfNeeded()
    }

    /// Closes associations idle past `idleTimeout` and handshakes older than `handshakeTimeout`.
    private func expire() {
        let now = NIODeadline.now()
        let stale = associations.values.filter { association in
            association.established
                ? now - association.lastActive >= configuration.idleTimeout
                : now - association.started >= configuration.handshakeTimeout
        }
        for association in stale {
            statistics.expired.add(1, ordering: .relaxed)
            remove(association, notify: association.established)
        }
    }
}
