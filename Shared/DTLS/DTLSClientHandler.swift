import CDTLS
import CoAP
import NIOCore
import Synchronization

/// How a client endpoint speaks DTLS to its servers.
public struct DTLSClientConfiguration: Sendable {
    public var context: DTLSContext
    /// The pre-shared key this device offers (its identity and key), when it uses one.
    public var psk: (identity: String, key: [UInt8])?
    /// The name (or IP address) the server's certificate must carry; nil checks none.
    public var serverName: String?
    public var mtu = 1_152
    /// A handshake not finished within this is abandoned; the next request starts another.
    public var handshakeTimeout: TimeAmount = .seconds(20)
    /// Plaintext datagrams held while a handshake runs; beyond, the oldest is dropped (CoAP
    /// sends it again).
    public var maxWaitingDatagrams = 64
    /// An association that has carried writes but heard nothing back for this long is taken
    /// for lost (the server restarted, or dropped it idle or at its bound: DTLS has no way to
    /// say so), and the next write starts a new handshake.
    public var silenceLimit: TimeAmount = .seconds(6)
    public var statistics = DTLSStatistics()
    /// The last handshake failure, in words, for a person to act on.
    public let lastFailure = DTLSLastFailure()

    public init(context: DTLSContext, psk: (identity: String, key: [UInt8])? = nil, serverName: String? = nil) {
        self.context = context
        self.psk = psk
        self.serverName = serverName
    }
}

/// The newest handshake failure of a client (nil after a handshake succeeds).
public final class DTLSLastFailure: Sendable {
    private let value = Mutex<String?>(nil)

    public init() {}

    public var description: String? { value.withLock { $0 } }

    func set(_ failure: String?) {
        value.withLock { $0 = failure }
    }
}

/// The client side of CoAP over DTLS: a `DatagramSecurity` for a requesting `CoAPEndpoint`.
public struct DTLSClientSecurity: DatagramSecurity {
    public let configuration: DTLSClientConfiguration

    public init(_ configuration: DTLSClientConfiguration) {
        self.configuration = configuration
    }

    public func makeLayer(on eventLoop: any EventLoop) -> SecureDatagramLayer {
        let handler = DTLSClientHandler(configuration: configuration)
        return SecureDatagramLayer(handler: handler) { handler.identity(of: $0) }
    }
}

/// DTLS 1.2 from a client channel: an association per server address, started by the first
/// datagram CoAP writes to it; what CoAP writes meanwhile waits for the handshake.
final class DTLSClientHandler: ChannelDuplexHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias InboundOut = AddressedEnvelope<ByteBuffer>
    typealias OutboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let configuration: DTLSClientConfiguration
    private var statistics: DTLSStatistics { configuration.statistics }
    private var associations: [SocketAddress: DTLSAssociation] = [:]
    private var context: ChannelHandlerContext?
    private var unflushed = false
    private var plaintext = [UInt8](repeating: 0, count: 16_384)

    init(configuration: DTLSClientConfiguration) {
        self.configuration = configuration
    }

    func identity(of peer: SocketAddress) -> String? {
        guard let association = associations[peer], association.established else { return nil }
        return association.identity
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        for association in associations.values { remove(association, notify: true) }
        flushIfNeeded()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        for association in associations.values { remove(association, notify: false) }
        context.fireChannelInactive()
    }

    // MARK: - Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let envelope = unwrapOutboundIn(data)
        let now = NIODeadline.now()
        if let stale = associations[envelope.remoteAddress], stale.established, let since = stale.unansweredSince, now - since >= configuration.silenceLimit {
            configuration.lastFailure.set("no answer from \(stale.peer) over DTLS for \(configuration.silenceLimit.nanoseconds / 1_000_000_000) s: handshaking again")
            remove(stale, notify: false)
        }
        guard let association = associations[envelope.remoteAddress] ?? start(envelope.remoteAddress) else {
            promise?.fail(DTLSError("cannot start DTLS with \(envelope.remoteAddress)"))
            return
        }
        guard association.established else {
            if association.waiting.count >= configuration.maxWaitingDatagrams { association.waiting.removeFirst() }
            association.waiting.append(envelope.data)
            promise?.succeed()
            return
        }
        let written = association.write(envelope.data)
        if association.unansweredSince == nil { association.unansweredSince = now }
        send(association)
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

    private func start(_ peer: SocketAddress) -> DTLSAssociation? {
        guard let (ssl, bio) = DTLSAssociation.makeSSL(configuration.context, mtu: configuration.mtu) else { return nil }
        SSL_set_connect_state(ssl)
        if let psk = configuration.psk {
            _ = psk.key.withUnsafeBufferPointer { cdtls_set_client_psk(ssl, psk.identity, $0.baseAddress, $0.count) }
        }
        if let name = configuration.serverName {
            // A name is checked against the certificate's DNS names, an address against its IP addresses.
            if (try? SocketAddress(ipAddress: name, port: 0)) != nil {
                _ = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
            } else {
                _ = SSL_set1_host(ssl, name)
                _ = cdtls_set_tlsext_host_name(ssl, name)
            }
        }
        let association = DTLSAssociation(peer: peer, ssl: ssl, bio: bio, now: .now())
        associations[peer] = association
        statistics.associations.add(1, ordering: .relaxed)
        statistics.handshaking.add(1, ordering: .relaxed)
        ERR_clear_error()
        advanceHandshake(association)
        return association.closed ? nil : association
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let association = associations[envelope.remoteAddress] else { return }
        association.lastActive = .now()
        association.unansweredSince = nil
        let (records, end) = envelope.data.readableBytesView.withUnsafeBytes { datagram in
            association.reading(datagram) { () -> ([ByteBuffer], DTLSAssociation.ReadEnd) in
                if !association.established {
                    advanceHandshake(association)
                    guard association.established else { return ([], .drained) }
                }
                return association.readRecords(into: &plaintext, allocator: context.channel.allocator)
            }
        }
        send(association)
        for record in records {
            context.fireChannelRead(wrapInboundOut(AddressedEnvelope(remoteAddress: association.peer, data: record)))
        }
        if end != .drained, !association.closed {
            configuration.lastFailure.set(end == .closedByPeer ? "the server closed the secure session" : "the secure session failed: \(lastOpenSSLError())")
            remove(association, notify: end == .closedByPeer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    private func advanceHandshake(_ association: DTLSAssociation) {
        guard !association.closed else { return }
        let result = SSL_do_handshake(association.ssl)
        send(association)
        if result == 1 {
            association.established = true
            association.identity = association.provenIdentity()
            association.timer?.cancel()
            association.timer = nil
            statistics.handshaking.add(-1, ordering: .relaxed)
            statistics.handshakesCompleted.add(1, ordering: .relaxed)
            statistics.negotiated(association.suite)
            configuration.lastFailure.set(nil)
            let waiting = association.waiting
            association.waiting = []
            for datagram in waiting where association.write(datagram) { send(association) }
            flushIfNeeded()
            return
        }
        let error = SSL_get_error(association.ssl, result)
        guard error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE else {
            fail(association, "DTLS handshake with \(association.peer) failed: \(Self.reason(of: association))")
            return
        }
        armTimer(association)
    }

    private static func reason(of association: DTLSAssociation) -> String {
        let verification = SSL_get_verify_result(association.ssl)
        if verification != X509_V_OK, let text = X509_verify_cert_error_string(Int(verification)) {
            return "the server's certificate: " + String(cString: text)
        }
        let text = lastOpenSSLError()
        return text.isEmpty ? "refused" : text
    }

    private func fail(_ association: DTLSAssociation, _ failure: String) {
        statistics.handshakesFailed.add(1, ordering: .relaxed)
        configuration.lastFailure.set(failure)
        remove(association, notify: false)
    }

    private func armTimer(_ association: DTLSAssociation) {
        association.timer?.cancel()
        association.timer = nil
        guard let context else { return }
        let left = configuration.handshakeTimeout - (.now() - association.started)
        guard left > .zero else {
            fail(association, "no DTLS handshake with \(association.peer) within \(configuration.handshakeTimeout.nanoseconds / 1_000_000_000) s")
            return
        }
        let microseconds = cdtls_timeout_microseconds(association.ssl)
        let wait = microseconds >= 0 ? min(TimeAmount.microseconds(microseconds), left) : left
        association.timer = context.eventLoop.assumeIsolated().scheduleTask(in: wait) { [self] in
            guard !association.closed else { return }
            ERR_clear_error()
            let result = cdtls_handle_timeout(association.ssl)
            send(association)
            flushIfNeeded()
            if result < 0 {
                fail(association, "DTLS handshake with \(association.peer): no answer")
            } else {
                armTimer(association)
            }
        }
    }

    /// Writes what OpenSSL queued for `association` (nothing once it is closed: its BIO is gone).
    private func send(_ association: DTLSAssociation) {
        guard !association.closed else { return }
        send(from: association.bio, to: association.peer)
    }

    private func send(from bio: OpaquePointer, to peer: SocketAddress) {
        guard let context else { return }
        unflushed = DTLSAssociation.sendQueued(from: bio, to: peer, through: context) > 0 || unflushed
    }

    private func flushIfNeeded() {
        guard unflushed, let context else { return }
        unflushed = false
        context.flush()
    }

    private func remove(_ association: DTLSAssociation, notify: Bool) {
        guard !association.closed else { return }
        let wasEstablished = association.established
        association.close(notify: notify) { bio in send(from: bio, to: association.peer) }
        if associations[association.peer] === association { associations.removeValue(forKey: association.peer) }
        statistics.associations.add(-1, ordering: .relaxed)
        if !wasEstablished { statistics.handshaking.add(-1, ordering: .relaxed) }
        flushIfNeeded()
    }
}
