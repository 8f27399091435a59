import CoAP
import DTLS
import Foundation
import NIOCore
import TestSupport
import XCTest

/// CoAP over DTLS 1.2 between our endpoint and libcoap's tools (Debian's libcoap3-bin, built on
/// OpenSSL and on GnuTLS), with pre-shared keys and with certificates from `scripts/test-ca`.
final class DTLSInteropTests: XCTestCase {
    static let identity = "dev01"
    static let key = Array("courier-test-key-01".utf8)
    static var certificates: String { TestCertificates.directory }

    var pskServer: DTLSContext.Credentials { .init(psk: true) }
    var certificateServer: DTLSContext.Credentials {
        .init(certificateChainFile: "\(Self.certificates)/server.pem", privateKeyFile: "\(Self.certificates)/server.key", trustedCAFile: "\(Self.certificates)/ca.pem")
    }

    func coapClient(_ flavour: String, _ arguments: [String], wait seconds: Int = 20) async throws -> ExternalProgram.Output {
        let client = try ExternalProgram.locate("coap-client-\(flavour)", hint: LibcoapInteropTests.install)
        return try await ExternalProgram.run(client, ["-B", "\(seconds)"] + arguments)
    }

    func pskArguments(identity: String = identity, key: [UInt8] = key) -> [String] {
        ["-u", identity, "-k", String(decoding: key, as: UTF8.self)]
    }

    // MARK: - libcoap's clients against our server

    func testCoapClientsOnOpenSSLAndGnuTLSPostOverDTLSWithAPreSharedKey() async throws {
        try await withOurDTLSServer(pskServer) { port, statistics in
            for flavour in ["openssl", "gnutls"] {
                let echo = try await coapClient(flavour, pskArguments() + ["-m", "post", "-e", "hello over \(flavour)", "coaps://127.0.0.1:\(port)/echo"])
                XCTAssertEqual(echo.status, 0, echo.stderr)
                XCTAssertEqual(echo.body, "hello over \(flavour)")
                let who = try await coapClient(flavour, pskArguments() + ["-m", "get", "coaps://127.0.0.1:\(port)/whoami"])
                XCTAssertEqual(who.body, "psk:\(Self.identity)", "the identity comes from the association, not from the request\n\(who.stderr)")
            }
            XCTAssertEqual(statistics.handshakesCompleted.load(ordering: .relaxed), 4)
            XCTAssertEqual(statistics.handshakesFailed.load(ordering: .relaxed), 0)
            // Both clients offer RFC 7925's mandatory suite (OpenSSL's "PSK:!NULL" includes it
            // on 3.0), and the server prefers it.
            XCTAssertEqual(statistics.negotiatedSuites, ["PSK-AES128-CCM8": 4])
        }
    }

    /// An unknown identity ends the handshake with an alert. A wrong key cannot: the client's
    /// Finished does not decrypt, and DTLS drops such records silently (RFC 6347 4.1.2.7), so
    /// that handshake never finishes and is dropped at the handshake deadline.
    func testAWrongKeyOrAnUnknownIdentityIsRefusedAtTheHandshake() async throws {
        try await withOurDTLSServer(pskServer, handshakeTimeout: .seconds(2)) { port, statistics in
            for (flavour, arguments) in [("openssl", pskArguments(identity: "nobody")), ("gnutls", pskArguments(identity: "nobody")),
                                         ("openssl", pskArguments(key: Array("not-the-key".utf8))), ("gnutls", pskArguments(key: Array("not-the-key".utf8)))] {
                let refused = try await coapClient(flavour, arguments + ["-m", "post", "-e", "let me in", "coaps://127.0.0.1:\(port)/echo"], wait: 3)
                XCTAssertNotEqual(refused.body, "let me in", "\(flavour): \(refused.stderr)")
            }
            XCTAssertEqual(statistics.handshakesCompleted.load(ordering: .relaxed), 0)
            XCTAssertGreaterThanOrEqual(statistics.handshakesFailed.load(ordering: .relaxed), 2, "the unknown identities were refused by an alert")
            for _ in 0..<50 where statistics.associations.load(ordering: .relaxed) > 0 { try await Task.sleep(for: .milliseconds(100)) }
            XCTAssertEqual(statistics.associations.load(ordering: .relaxed), 0, "a refused handshake leaves nothing behind past its deadline")
        }
    }

    func testCoapClientsWithACertificateFromTheConfiguredAuthority() async throws {
        try await withOurDTLSServer(certificateServer) { port, statistics in
            let certificates = Self.certificates
            for flavour in ["openssl", "gnutls"] {
                let who = try await coapClient(flavour, [
                    "-c", "\(certificates)/client-alice.pem", "-j", "\(certificates)/client-alice.key", "-C", "\(certificates)/ca.pem",
                    "-m", "get", "coaps://127.0.0.1:\(port)/whoami",
                ])
                XCTAssertEqual(who.body, "cert:alice", "\(flavour): \(who.stderr)")
            }
            let rogue = try await coapClient("openssl", [
                "-c", "\(certificates)/rogue-client.pem", "-j", "\(certificates)/rogue-client.key", "-C", "\(certificates)/ca.pem",
                "-m", "get", "coaps://127.0.0.1:\(port)/whoami",
            ], wait: 4)
            XCTAssertFalse(rogue.body.contains("cert:"), "a certificate from another authority is refused: \(rogue.body) \(rogue.stderr)")
            XCTAssertEqual(statistics.handshakesCompleted.load(ordering: .relaxed), 2)
            XCTAssertGreaterThanOrEqual(statistics.handshakesFailed.load(ordering: .relaxed), 1)
            XCTAssertEqual(statistics.negotiatedSuites, ["ECDHE-ECDSA-AES128-CCM8": 2], "RFC 7925's certificate suite")
        }
    }

    // MARK: - The cookie exchange

    /// ClientHellos from 200 addresses that never answer the HelloVerifyRequest: each draws one
    /// answer no larger than itself, and the server keeps nothing for any of them. A ClientHello
    /// cut short draws nothing at all.
    func testClientHellosWithoutACookieDrawOneSmallAnswerAndKeepNothing() async throws {
        let hello = try DTLSContext(role: .client, credentials: .init(psk: true)).firstClientHello()
        try await withOurDTLSServer(pskServer) { port, statistics in
            let server = try SocketAddress(ipAddress: "127.0.0.1", port: port)
            var sockets: [RawUDPSocket] = []
            for _ in 0..<200 { sockets.append(try await RawUDPSocket.bind()) }
            for socket in sockets { try await socket.send(hello, to: server) }
            var answers: [[UInt8]] = []
            for socket in sockets { answers += try await socket.collect(expecting: 1, timeout: .seconds(2)) }
            XCTAssertEqual(answers.count, 200, "one HelloVerifyRequest per ClientHello")
            XCTAssertEqual(answers.filter { $0.count > hello.count }.count, 0, "no answer larger than its ClientHello (\(hello.count) bytes): \(answers.map(\.count).max() ?? 0)")
            XCTAssertEqual(statistics.associations.load(ordering: .relaxed), 0, "no state for a peer that has not answered its cookie")
            XCTAssertEqual(statistics.helloVerifyRequests.load(ordering: .relaxed), 200)

            let short = Array(hello.prefix(DTLSRecords.minimumClientHelloLength - 1))
            let silence = try await sockets[0].exchange(short, with: server, timeout: .milliseconds(500))
            XCTAssertEqual(silence.count, 0, "a datagram too short to be a ClientHello is not answered")
            for socket in sockets { await socket.close() }
        }
    }

    /// A cookie proves one address and port: the ClientHello that returns it from the port it
    /// was sent to makes an association; the same ClientHello from another port draws only a
    /// new HelloVerifyRequest.
    func testACookieIsBoundToTheAddressAndPortItWasSentTo() async throws {
        let hello = try DTLSContext(role: .client, credentials: .init(psk: true)).firstClientHello()
        try await withOurDTLSServer(pskServer) { port, statistics in
            let server = try SocketAddress(ipAddress: "127.0.0.1", port: port)
            let owner = try await RawUDPSocket.bind()
            let other = try await RawUDPSocket.bind()
            let answers = try await owner.exchange(hello, with: server)
            let verify = try XCTUnwrap(answers.first)
            // HelloVerifyRequest: record (13), handshake header (12), version (2), cookie length, cookie.
            let cookie = Array(verify[28..<(28 + Int(verify[27]))])
            XCTAssertEqual(cookie.count, 16)
            let returned = Self.clientHello(hello, withCookie: cookie)

            _ = try await other.exchange(returned, with: server)
            XCTAssertEqual(statistics.associations.load(ordering: .relaxed), 0, "another port's cookie proves nothing")
            XCTAssertEqual(statistics.helloVerifyRequests.load(ordering: .relaxed), 2)
            let flight = try await owner.exchange(returned, with: server)
            XCTAssertFalse(flight.isEmpty, "the server's first flight")
            XCTAssertEqual(statistics.associations.load(ordering: .relaxed), 1, "the cookie's own port gets an association")
            await owner.close()
            await other.close()
        }
    }

    /// At the association bound a handshake under way is closed before an established device:
    /// peers that pass the cookie but never finish cannot push devices out.
    func testAtTheBoundAHandshakeUnderWayGoesBeforeAnEstablishedDevice() async throws {
        let hello = try DTLSContext(role: .client, credentials: .init(psk: true)).firstClientHello()
        try await withOurDTLSServer(pskServer, maxAssociations: 2) { port, statistics in
            let server = try SocketAddress(ipAddress: "127.0.0.1", port: port)
            var devices: [CoAPEndpoint] = []
            for _ in 0..<2 {
                var configuration = CoAPEndpoint.Configuration()
                configuration.security = DTLSClientSecurity(DTLSClientConfiguration(context: try DTLSContext(role: .client, credentials: .init(psk: true)), psk: (Self.identity, Self.key)))
                let device = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
                let answer = try await device.request(.request(.get, path: "/whoami"), to: server)
                XCTAssertEqual(answer.payload, Array("psk:\(Self.identity)".utf8))
                devices.append(device)
            }
            try await Task.sleep(for: .milliseconds(50))
            // The second device is the more recently active one.
            _ = try await devices[1].request(.request(.get, path: "/whoami"), to: server)

            // Two strangers that return their cookies and then say nothing more.
            var strangers: [RawUDPSocket] = []
            for _ in 0..<2 {
                let stranger = try await RawUDPSocket.bind()
                let verify = try await stranger.exchange(hello, with: server)
                let cookie = Array(verify[0][28..<(28 + Int(verify[0][27]))])
                _ = try await stranger.exchange(Self.clientHello(hello, withCookie: cookie), with: server)
                strangers.append(stranger)
            }
            XCTAssertEqual(statistics.evicted.load(ordering: .relaxed), 2)
            XCTAssertEqual(statistics.associations.load(ordering: .relaxed), 2)
            // The first stranger went for the second; the first device (then the idlest
            // established) went for the first stranger; the second device is still in.
            let completed = statistics.handshakesCompleted.load(ordering: .relaxed)
            let still = try await devices[1].request(.request(.get, path: "/whoami"), to: server)
            XCTAssertEqual(still.code, .content)
            XCTAssertEqual(statistics.handshakesCompleted.load(ordering: .relaxed), completed, "no new handshake: its association was kept")
            // The evicted device hears nothing back, takes its association for lost after the
            // silence limit (6 s), and handshakes again on CoAP's next retransmission.
            let back = try await devices[0].request(.request(.get, path: "/whoami"), to: server)
            XCTAssertEqual(back.code, .content)
            XCTAssertEqual(statistics.handshakesCompleted.load(ordering: .relaxed), completed + 1)
            for device in devices { await device.close() }
            for stranger in strangers { await stranger.close() }
        }
    }

    /// A server that restarted knows nothing of the client's association, and DTLS cannot say
    /// so: the client takes its silence (past `silenceLimit`) as the end, and its next write
    /// (CoAP's retransmission) starts a new handshake.
    func testOurClientHandshakesAgainWithAServerThatRestarted() async throws {
        var dtls = DTLSClientConfiguration(context: try DTLSContext(role: .client, credentials: .init(psk: true)), psk: (Self.identity, Self.key))
        dtls.silenceLimit = .seconds(1)
        var configuration = CoAPEndpoint.Configuration()
        configuration.security = DTLSClientSecurity(dtls)
        configuration.transmission.ackTimeout = .milliseconds(400)
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
        defer { Task { await client.close() } }
        var port = 0
        try await withOurDTLSServer(pskServer) { bound, _ in
            port = bound
            let first = try await client.request(.request(.get, path: "/whoami"), to: SocketAddress(ipAddress: "127.0.0.1", port: bound))
            XCTAssertEqual(first.code, .content)
        }
        // The same port again, a new server with no associations.
        let server = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        var serving = CoAPEndpoint.Configuration()
        var restarted = DTLSServerConfiguration(context: try DTLSContext(role: .server, credentials: pskServer), keys: PSKKeyCache(source: FixedKeys(keys: [Self.identity: Self.key])))
        restarted.handshakeTimeout = .seconds(30)
        serving.security = DTLSServerSecurity(restarted)
        let again = try await CoAPEndpoint.bind(host: "127.0.0.1", port: port, serving: true, configuration: serving)
        async let served: Void = again.serve(InteropHandler())
        let answer = try? await client.request(.request(.get, path: "/whoami"), to: server)
        await again.close()
        await served
        XCTAssertEqual(answer?.code, .content, dtls.lastFailure.description ?? "")
        XCTAssertEqual(restarted.statistics.handshakesCompleted.load(ordering: .relaxed), 1, "a new handshake with the restarted server")
        XCTAssertEqual(dtls.statistics.handshakesCompleted.load(ordering: .relaxed), 2)
    }

    /// `hello` (the first ClientHello, with an empty cookie) carrying `cookie`, as a client
    /// sends it again (RFC 6347 4.2.1): lengths and sequence numbers adjusted.
    static func clientHello(_ hello: [UInt8], withCookie cookie: [UInt8]) -> [UInt8] {
        let handshake = 13, body = 25
        let cookieAt = body + 2 + 32 + 1 + Int(hello[body + 34])
        precondition(hello[cookieAt] == 0, "a first ClientHello has no cookie")
        var bytes = Array(hello[..<cookieAt]) + [UInt8(cookie.count)] + cookie + Array(hello[(cookieAt + 1)...])
        func add(_ offset: Int, width: Int) {
            var value = 0
            for index in 0..<width { value = value << 8 | Int(bytes[offset + index]) }
            value += cookie.count
            for index in 0..<width { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * (width - 1 - index))) }
        }
        add(11, width: 2)              // record length
        add(handshake + 1, width: 3)   // handshake length
        add(handshake + 9, width: 3)   // fragment length
        bytes[10] = 1                  // record sequence number
        bytes[handshake + 5] = 1       // message_seq
        return bytes
    }

    // MARK: - Our client against libcoap's server

    func testOurClientAgainstCoapServerWithAPreSharedKeyAndWithACertificate() async throws {
        let certificates = Self.certificates
        let server = try ExternalProgram.locate("coap-server-openssl", hint: LibcoapInteropTests.install)
        let cases: [(String, [String], DTLSClientConfiguration)] = [
            ("psk", ["-k", String(decoding: Self.key, as: UTF8.self)],
             DTLSClientConfiguration(context: try DTLSContext(role: .client, credentials: .init(psk: true)), psk: (Self.identity, Self.key))),
            ("certificate", ["-c", "\(certificates)/server.pem", "-j", "\(certificates)/server.key", "-C", "\(certificates)/ca.pem", "-R", "\(certificates)/ca.pem"],
             DTLSClientConfiguration(context: try DTLSContext(role: .client, credentials: .init(
                 certificateChainFile: "\(certificates)/client-alice.pem", privateKeyFile: "\(certificates)/client-alice.key", trustedCAFile: "\(certificates)/ca.pem"
             )), serverName: "127.0.0.1")),
        ]
        for (name, arguments, dtls) in cases {
            let port = try await freeUDPPort()
            try await ExternalProgram.withRunning(server, ["-A", "127.0.0.1", "-p", "\(port)"] + arguments) { _ in
                var configuration = CoAPEndpoint.Configuration()
                configuration.security = DTLSClientSecurity(dtls)
                let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
                defer { Task { await client.close() } }
                // coap-server listens for DTLS one port above its clear-text one.
                let peer = try SocketAddress(ipAddress: "127.0.0.1", port: port + 1)
                var answer: CoAPMessage?
                for _ in 0..<20 where answer == nil {
                    answer = try? await client.request(.request(.get, path: "/"), to: peer)
                    if answer == nil { try await Task.sleep(for: .milliseconds(250)) }
                }
                XCTAssertEqual(answer?.code, .content, "\(name): \(dtls.lastFailure.description ?? "no failure recorded")")
                XCTAssertTrue(String(decoding: answer?.payload ?? [], as: UTF8.self).contains("libcoap"), name)
                XCTAssertEqual(dtls.statistics.handshakesCompleted.load(ordering: .relaxed), 1, name)
            }
        }
    }

    /// A server certificate our client does not trust: the handshake fails, and says why.
    func testOurClientRefusesAServerCertificateFromAnotherAuthority() async throws {
        let certificates = Self.certificates
        try await withOurDTLSServer(.init(certificateChainFile: "\(certificates)/rogue-client.pem", privateKeyFile: "\(certificates)/rogue-client.key")) { port, _ in
            let dtls = DTLSClientConfiguration(context: try DTLSContext(role: .client, credentials: .init(trustedCAFile: "\(certificates)/ca.pem")), serverName: "127.0.0.1")
            var configuration = CoAPEndpoint.Configuration()
            configuration.security = DTLSClientSecurity(dtls)
            configuration.transmission.ackTimeout = .milliseconds(300)
            configuration.transmission.maxRetransmit = 1
            let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
            let answer = try? await client.request(.request(.get, path: "/whoami"), to: SocketAddress(ipAddress: "127.0.0.1", port: port))
            await client.close()
            XCTAssertNil(answer)
            XCTAssertTrue(dtls.lastFailure.description?.contains("certificate") == true, dtls.lastFailure.description ?? "no failure recorded")
        }
    }
}

/// Static keys by identity, for the tests. Each lookup takes 50 ms, as a database read may: the
/// rest of the client's flight arrives meanwhile and must wait with the datagram that named it.
struct FixedKeys: PSKKeySource {
    var keys: [String: [UInt8]]

    func key(forIdentity identity: String) async throws -> [UInt8]? {
        try await Task.sleep(for: .milliseconds(50))
        return keys[identity]
    }
}

/// Our CoAP server over DTLS on a free loopback port with `InteropHandler`'s resources.
func withOurDTLSServer(
    _ credentials: DTLSContext.Credentials, handshakeTimeout: TimeAmount = .seconds(30), maxAssociations: Int = 4_096, _ body: (Int, DTLSStatistics) async throws -> Void
) async throws {
    let context = try DTLSContext(role: .server, credentials: credentials)
    var dtls = DTLSServerConfiguration(context: context, keys: credentials.psk ? PSKKeyCache(source: FixedKeys(keys: [DTLSInteropTests.identity: DTLSInteropTests.key])) : nil)
    dtls.handshakeTimeout = handshakeTimeout
    dtls.maxAssociations = maxAssociations
    var configuration = CoAPEndpoint.Configuration()
    configuration.security = DTLSServerSecurity(dtls)
    try await withOurServer(configuration: configuration) { port in try await body(port, dtls.statistics) }
}
