import CDTLS

/// One OpenSSL context for DTLS 1.2, shared by every association of an endpoint (OpenSSL's
/// contexts are safe to share across threads once set up; nothing changes them afterwards).
public final class DTLSContext: @unchecked Sendable {
    public enum Role: Sendable {
        case server
        case client
    }

    /// What the endpoint proves itself with, and what it asks of its peers.
    public struct Credentials: Sendable {
        /// Pre-shared keys (RFC 4279): a server looks keys up by identity, a client offers one.
        public var psk = false
        /// PEM certificate chain and private key (an ECDSA P-256 key for the RFC 7925 suite).
        public var certificateChainFile: String?
        public var privateKeyFile: String?
        /// PEM file of the certificate authorities a peer's certificate must chain to. A server
        /// with one verifies any client certificate offered; a client verifies the server's.
        public var trustedCAFile: String?
        /// A server refuses a handshake without a client certificate (PSK handshakes, which
        /// carry none, stay allowed when `psk` is set).
        public var requirePeerCertificate = false

        public init(psk: Bool = false, certificateChainFile: String? = nil, privateKeyFile: String? = nil, trustedCAFile: String? = nil, requirePeerCertificate: Bool = false) {
            self.psk = psk
            self.certificateChainFile = certificateChainFile
            self.privateKeyFile = privateKeyFile
            self.trustedCAFile = trustedCAFile
            self.requirePeerCertificate = requirePeerCertificate
        }
    }

    /// RFC 7925's suites first (CCM with an 8-byte tag), then CCM and GCM: libcoap's OpenSSL
    /// client on OpenSSL 3.1 and later does not offer CCM8, which needs security level 0 there.
    static let pskCiphers = "PSK-AES128-CCM8:PSK-AES128-CCM:PSK-AES128-GCM-SHA256"
    static let certificateCiphers = "ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES128-GCM-SHA256"

    let pointer: OpaquePointer
    public let role: Role
    public let credentials: Credentials

    public init(role: Role, credentials: Credentials) throws(DTLSError) {
        guard credentials.psk || credentials.certificateChainFile != nil || (role == .client && credentials.trustedCAFile != nil) else {
            throw DTLSError("DTLS needs pre-shared keys or a certificate")
        }
        guard let context = SSL_CTX_new(role == .server ? DTLS_server_method() : DTLS_client_method()) else {
            throw .openSSL("cannot make an OpenSSL context")
        }
        pointer = context
        self.role = role
        self.credentials = credentials
        do {
            try configure()
        } catch {
            SSL_CTX_free(context)
            throw error
        }
    }

    deinit {
        SSL_CTX_free(pointer)
    }

    private func configure() throws(DTLSError) {
        guard cdtls_ctx_set_dtls12_only(pointer) == 1 else { throw .openSSL("cannot limit OpenSSL to DTLS 1.2") }
        _ = SSL_CTX_set_options(pointer, role == .server ? cdtls_default_server_options() : cdtls_default_client_options())
        var suites: [String] = []
        if credentials.psk { suites.append(Self.pskCiphers) }
        if credentials.certificateChainFile != nil || (role == .client && credentials.trustedCAFile != nil) { suites.append(Self.certificateCiphers) }
        guard SSL_CTX_set_cipher_list(pointer, suites.joined(separator: ":")) == 1 else { throw .openSSL("no usable cipher suite") }
        // OpenSSL 3.1 and later refuse 64-bit-tag CCM above security level 0; keys and groups
        // are pinned below, so level 0 admits nothing weaker than what is configured.
        if OpenSSL_version_num() >= 0x3010_0000 { SSL_CTX_set_security_level(pointer, 0) }
        guard cdtls_ctx_set1_groups_list(pointer, "P-256") == 1 else { throw .openSSL("cannot set the groups") }
        guard cdtls_ctx_set1_sigalgs_list(pointer, "ECDSA+SHA256") == 1 else { throw .openSSL("cannot set the signature algorithms") }

        if let chain = credentials.certificateChainFile {
            guard let key = credentials.privateKeyFile else { throw DTLSError("a certificate needs its private key") }
            guard SSL_CTX_use_certificate_chain_file(pointer, chain) == 1 else { throw .openSSL("cannot load the certificate chain \(chain)") }
            guard SSL_CTX_use_PrivateKey_file(pointer, key, SSL_FILETYPE_PEM) == 1 else { throw .openSSL("cannot load the private key \(key)") }
            guard SSL_CTX_check_private_key(pointer) == 1 else { throw .openSSL("the private key \(key) does not match the certificate") }
        }
        if let authorities = credentials.trustedCAFile {
            guard SSL_CTX_load_verify_locations(pointer, authorities, nil) == 1 else { throw .openSSL("cannot load the certificate authorities \(authorities)") }
            var mode = SSL_VERIFY_PEER
            if role == .server, credentials.requirePeerCertificate, !credentials.psk { mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT }
            if role == .server, let names = SSL_load_client_CA_file(authorities) { SSL_CTX_set_client_CA_list(pointer, names) }
            SSL_CTX_set_verify(pointer, mode, nil)
        }
        switch role {
        case .server:
            cdtls_ctx_install_cookies(pointer)
            if credentials.psk { cdtls_ctx_install_server_psk(pointer) }
        case .client:
            if credentials.psk { cdtls_ctx_install_client_psk(pointer) }
        }
    }
}

extension DTLSContext {
    /// The first datagram a client on this context sends: a ClientHello without a cookie. For
    /// tools and tests that probe a server's cookie exchange.
    public func firstClientHello(mtu: Int = 1_152) throws(DTLSError) -> [UInt8] {
        guard role == .client, let (ssl, bio) = DTLSAssociation.makeSSL(self, mtu: mtu) else { throw DTLSError("a ClientHello needs a client context") }
        defer { SSL_free(ssl) }
        SSL_set_connect_state(ssl)
        ERR_clear_error()
        _ = SSL_do_handshake(ssl)
        let length = cdtls_datagram_bio_next_length(bio)
        guard length > 0 else { throw .openSSL("OpenSSL wrote no ClientHello") }
        var datagram = [UInt8](repeating: 0, count: Int(length))
        _ = datagram.withUnsafeMutableBufferPointer { cdtls_datagram_bio_pop(bio, $0.baseAddress, $0.count) }
        return datagram
    }
}
