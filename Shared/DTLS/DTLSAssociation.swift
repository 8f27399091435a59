import CDTLS
import NIOCore

/// One peer's DTLS state on one channel: its SSL (which owns the datagram BIO) and what the
/// handler needs around it. Used on the channel's event loop only.
final class DTLSAssociation {
    let peer: SocketAddress
    let ssl: OpaquePointer
    let bio: OpaquePointer
    let started: NIODeadline
    var lastActive: NIODeadline
    var established = false
    /// Who the peer proved to be: `psk:IDENTITY` or `cert:COMMON NAME`.
    var identity: String?
    var timer: Scheduled<Void>?
    /// Datagrams held, in order, while the key for the PSK identity the first names is looked
    /// up (the rest of the client's flight comes meanwhile); at most `maxHeld`.
    var held: [[UInt8]] = []
    static let maxHeld = 8
    var lookingUp = false
    /// The PSK identity whose key was set on the SSL (or found unknown).
    var resolvedIdentity: String?
    /// Plaintext a client wrote before its handshake finished (bounded by the handler).
    var waiting: [ByteBuffer] = []
    /// A client's first write since it last heard from the server.
    var unansweredSince: NIODeadline?
    var closed = false

    /// Takes `ssl` (and the BIO it reads and writes through).
    init(peer: SocketAddress, ssl: OpaquePointer, bio: OpaquePointer, now: NIODeadline) {
        self.peer = peer
        self.ssl = ssl
        self.bio = bio
        started = now
        lastActive = now
    }

    /// A fresh SSL on `context` with its own datagram BIO; nil when OpenSSL cannot make one.
    static func makeSSL(_ context: DTLSContext, mtu: Int) -> (ssl: OpaquePointer, bio: OpaquePointer)? {
        guard let ssl = SSL_new(context.pointer) else { return nil }
        guard let bio = cdtls_datagram_bio_new() else {
            SSL_free(ssl)
            return nil
        }
        SSL_set_bio(ssl, bio, bio)
        _ = cdtls_set_mtu(ssl, mtu)
        return (ssl, bio)
    }

    /// Runs `body` with `datagram` as the next thing the SSL reads; clears OpenSSL's error
    /// queue first (SSL_get_error needs it empty) and unstages after, unless `body` closed the
    /// association (its SSL, and the BIO with it, are freed then).
    func reading<T>(_ datagram: UnsafeRawBufferPointer, _ body: () -> T) -> T {
        ERR_clear_error()
        cdtls_datagram_bio_stage(bio, datagram.baseAddress?.assumingMemoryBound(to: UInt8.self), datagram.count)
        defer { if !closed { cdtls_datagram_bio_unstage(bio) } }
        return body()
    }

    /// What a peer's cookie is computed over: its address family, address, port and scope as
    /// the socket gives them (at most 28 bytes), so one cookie proves one address and port.
    static func cookieInput(_ peer: SocketAddress) -> [UInt8] {
        switch peer {
        case .v4(let address):
            var bytes: [UInt8] = [4]
            withUnsafeBytes(of: address.address.sin_addr) { bytes += $0 }
            withUnsafeBytes(of: address.address.sin_port) { bytes += $0 }
            return bytes
        case .v6(let address):
            var bytes: [UInt8] = [6]
            withUnsafeBytes(of: address.address.sin6_addr) { bytes += $0 }
            withUnsafeBytes(of: address.address.sin6_port) { bytes += $0 }
            withUnsafeBytes(of: address.address.sin6_scope_id) { bytes += $0 }
            return bytes
        default:
            return Array("\(peer)".utf8.prefix(32))
        }
    }

    /// What the peer is, once the handshake has finished: its PSK identity or its verified
    /// certificate's common name.
    func provenIdentity() -> String? {
        if let psk = SSL_get_psk_identity(ssl) { return "psk:" + String(cString: psk) }
        var name = [CChar](repeating: 0, count: 256)
        guard cdtls_peer_common_name(ssl, &name, name.count) >= 0 else { return nil }
        return "cert:" + String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The suite the handshake settled on, by OpenSSL's name.
    var suite: String {
        guard let cipher = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_get_name(cipher) else { return "?" }
        return String(cString: name)
    }

    /// Whether the negotiated (or being negotiated) suite uses a pre-shared key.
    var negotiatesPSK: Bool {
        guard let cipher = SSL_get_pending_cipher(ssl) ?? SSL_get_current_cipher(ssl) else { return false }
        return SSL_CIPHER_get_kx_nid(cipher) == NID_kx_psk
    }

    /// Frees the SSL (and its BIO). Sends close_notify first when the handshake had finished
    /// and nothing fatal happened (SSL_shutdown must not follow a fatal error).
    func close(notify: Bool, send: (OpaquePointer) -> Void) {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        timer = nil
        if notify, established, SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN == 0 {
            ERR_clear_error()
            _ = SSL_shutdown(ssl)
            send(bio)
        }
        SSL_free(ssl)
    }
}

extension DTLSAssociation {
    /// Writes what OpenSSL queued on `bio` to `peer` through `context`, one datagram each,
    /// without a flush; returns how many.
    static func sendQueued(from bio: OpaquePointer, to peer: SocketAddress, through context: ChannelHandlerContext) -> Int {
        var sent = 0
        while case let length = cdtls_datagram_bio_next_length(bio), length >= 0 {
            var buffer = context.channel.allocator.buffer(capacity: Int(length))
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { out in
                Int(cdtls_datagram_bio_pop(bio, out.baseAddress?.assumingMemoryBound(to: UInt8.self), out.count))
            }
            sent += 1
            context.write(NIOAny(AddressedEnvelope(remoteAddress: peer, data: buffer)), promise: nil)
        }
        return sent
    }

    /// How a read of application data ended.
    enum ReadEnd {
        /// Everything there was has been read.
        case drained
        /// The peer sent close_notify.
        case closedByPeer
        /// A fatal alert or error: the association cannot go on.
        case fatal
    }

    /// Reads every record OpenSSL can give now (a datagram may carry several), as buffers from
    /// `allocator`; `scratch` takes each record first.
    func readRecords(into scratch: inout [UInt8], allocator: ByteBufferAllocator) -> (records: [ByteBuffer], end: ReadEnd) {
        var records: [ByteBuffer] = []
        while true {
            let count = scratch.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if count > 0 {
                records.append(allocator.buffer(bytes: scratch[0..<Int(count)]))
                continue
            }
            let error = SSL_get_error(ssl, count)
            if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { return (records, .drained) }
            return (records, error == SSL_ERROR_ZERO_RETURN ? .closedByPeer : .fatal)
        }
    }

    /// Writes one plaintext datagram as a record; false when OpenSSL refused it.
    func write(_ plaintext: ByteBuffer) -> Bool {
        ERR_clear_error()
        return plaintext.readableBytesView.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) } > 0
    }
}

