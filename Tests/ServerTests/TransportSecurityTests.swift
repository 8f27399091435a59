import CoAP
import CourierProtocol
import DTLS
import Foundation
import NIOCore
import TestSupport
import XCTest

/// The real `courier-server` with CoAP over DTLS (issue 19): libcoap's clients on OpenSSL and on
/// GnuTLS send messages with a device's pre-shared key and with a client certificate, and the
/// device is the one the association proves, with no token in the request.
final class TransportSecurityTests: XCTestCase {
    func coapClient(_ flavour: String) throws -> String {
        try ExternalProgram.locate("coap-client-\(flavour)", hint: "apt-get install libcoap3-bin (scripts/install-deps)")
    }

    func sendFile(_ message: SendMessage) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("courier-send-\(UUID().uuidString).bin").path
        try Data(message.serializedBytes()).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The server's flags for DTLS with keys and certificates on `port`.
    func secureArguments(coapsPort port: Int) -> [String] {
        ["--coaps-port", "\(port)", "--dtls-psk", "--tls-certificate", TestCertificates.path("server.pem"), "--tls-key", TestCertificates.path("server.key"),
         "--tls-client-ca", TestCertificates.path("ca.pem")]
    }

    func testMessagesSentOverDTLSWithADeviceKeyOrACertificateAreStoredOnceAsThatDevice() async throws {
        let coapsPort = try await freeUDPPort()
        try await withServer(secureArguments(coapsPort: coapsPort)) { server in
            let alice = try await server.account("alice", device: "laptop")
            let phone = try await server.admin(["device", "add", "alice", "phone"])
            _ = try await server.account("bob")
            let chat = try await server.chat("general", members: ["alice", "bob"])
            let key = try await server.admin(["device", "key", "alice", "laptop"])
            let identity = try XCTUnwrap(key["psk_identity"] as? String)
            let keyText = try XCTUnwrap(key["psk_key"] as? String)
            let uri = "coaps://127.0.0.1:\(coapsPort)/v1/msg"

            var expected: [(String, UInt64)] = []
            for flavour in ["openssl", "gnutls"] {
                let id = "psk-\(flavour)"
                let file = try sendFile(SendMessage(clientMessageID: id, chatID: chat, text: "over DTLS with a key, \(flavour)", clientSentAtMs: 1))
                let output = try await ExternalProgram.run(try coapClient(flavour), ["-B", "20", "-u", identity, "-k", keyText, "-m", "post", "-t", "65001", "-f", file, uri])
                let result = try SendResult(serializedBytes: output.stdout.dropLast())
                XCTAssertEqual(result.clientMessageID, id, output.stderr)
                expected.append((id, alice.deviceID))
            }
            let certificate = try sendFile(SendMessage(clientMessageID: "cert-openssl", chatID: chat, text: "over DTLS with a certificate", clientSentAtMs: 2))
            let output = try await ExternalProgram.run(try coapClient("openssl"), [
                "-B", "20", "-c", TestCertificates.path("client-alice-phone.pem"), "-j", TestCertificates.path("client-alice-phone.key"),
                "-C", TestCertificates.path("ca.pem"), "-m", "post", "-t", "65001", "-f", certificate, uri,
            ])
            XCTAssertEqual(try SendResult(serializedBytes: output.stdout.dropLast()).clientMessageID, "cert-openssl", output.stderr)
            expected.append(("cert-openssl", (phone["device_id"] as! NSNumber).uint64Value))

            // The same message again over the same key: effectively-once, as on clear text.
            let again = try await ExternalProgram.run(try coapClient("openssl"), [
                "-B", "20", "-u", identity, "-k", keyText, "-m", "post", "-t", "65001", "-f", try sendFile(SendMessage(clientMessageID: "psk-openssl", chatID: chat, text: "over DTLS with a key, openssl", clientSentAtMs: 1)), uri,
            ])
            XCTAssertEqual(try SendResult(serializedBytes: again.stdout.dropLast()).chatSequence, 1, again.stderr)

            // A wrong key, another authority's certificate: refused at the handshake, nothing stored.
            let wrong = try sendFile(SendMessage(clientMessageID: "intruder", chatID: chat, text: "let me in", clientSentAtMs: 3))
            _ = try await ExternalProgram.run(try coapClient("gnutls"), ["-B", "3", "-u", identity, "-k", String(repeating: "x", count: 22), "-m", "post", "-t", "65001", "-f", wrong, uri])
            // (OpenSSL's client, since GnuTLS's offers no certificate the server's CA list does not name.)
            _ = try await ExternalProgram.run(try coapClient("openssl"), [
                "-B", "3", "-c", TestCertificates.path("rogue-client.pem"), "-j", TestCertificates.path("rogue-client.key"), "-C", TestCertificates.path("ca.pem"),
                "-m", "post", "-t", "65001", "-f", wrong, uri,
            ])

            let history = try await server.waitForHistory("general", count: 3)
            try await Task.sleep(for: .milliseconds(300))
            let settled = try await server.history("general")
            XCTAssertEqual(settled.count, 3, "stored once each, and nothing from the refused handshakes: \(settled.map(\.clientMessageID))")
            XCTAssertEqual(history.map(\.clientMessageID), expected.map(\.0))
            XCTAssertEqual(history.map(\.device), expected.map(\.1), "the device is the one the key or the certificate names")
            let completed = try await server.metric("courier_dtls_handshakes_completed")
            XCTAssertEqual(completed, 4, "the refused ones did not complete")
            let failed = try await server.metric("courier_dtls_handshakes_failed")
            XCTAssertGreaterThanOrEqual(failed ?? 0, 1, "another authority's certificate ends its handshake")
        }
    }

    /// Spoofed ClientHellos from 500 addresses (ports) against the real server: each draws one
    /// HelloVerifyRequest no larger than itself, and the associations gauge stays at 0.
    func testAClientHelloFloodKeepsNoStateInTheServer() async throws {
        let coapsPort = try await freeUDPPort()
        let hello = try DTLSContext(role: .client, credentials: .init(psk: true)).firstClientHello()
        try await withServer(secureArguments(coapsPort: coapsPort)) { server in
            let target = try SocketAddress(ipAddress: "127.0.0.1", port: coapsPort)
            var sockets: [RawUDPSocket] = []
            for _ in 0..<500 { sockets.append(try await RawUDPSocket.bind()) }
            for socket in sockets { try await socket.send(hello, to: target) }
            var answers: [[UInt8]] = []
            for socket in sockets { answers += try await socket.collect(expecting: 1, timeout: .seconds(2)) }
            for socket in sockets { await socket.close() }
            XCTAssertEqual(answers.count, 500)
            XCTAssertEqual(answers.filter { $0.count > hello.count }.count, 0, "no answer larger than the \(hello.count)-byte ClientHello")
            let verified = try await server.waitForMetric("courier_dtls_hello_verify_requests") { $0 >= 500 }
            XCTAssertEqual(verified, 500)
            let associations = try await server.metric("courier_dtls_associations")
            XCTAssertEqual(associations, 0, "no per-peer state for ClientHellos whose cookie never came back")
        }
    }

    /// With `requireSecure` the clear-text port is not opened: a request there draws nothing,
    /// while the same device gets in over DTLS.
    func testRequireSecureOpensNoClearTextPort() async throws {
        let coapsPort = try await freeUDPPort()
        try await withServer(secureArguments(coapsPort: coapsPort) + ["--require-secure"]) { server in
            let alice = try await server.account("alice")
            _ = try await server.chat("general", members: ["alice"])
            let clear = CoAPMessage.raw(.get, path: "/v1/chats", query: ["t=\(alice.token)"], messageID: 7)
            let silence = try await withRawSocket { socket in try await socket.exchange(clear.encode(), with: server.peer, timeout: .seconds(1)) }
            XCTAssertEqual(silence.count, 0, "nothing listens on the clear-text port")
            let key = try await server.admin(["device", "key", "alice", "phone"])
            let chats = try await ExternalProgram.run(try coapClient("openssl"), [
                "-B", "20", "-u", key["psk_identity"] as! String, "-k", key["psk_key"] as! String, "-m", "get", "coaps://127.0.0.1:\(coapsPort)/v1/chats",
            ])
            XCTAssertEqual(chats.status, 0, chats.stderr)
            let list = try ChatList(serializedBytes: Array(chats.stdout.dropLast()))
            XCTAssertEqual(list.chats.map(\.name), ["general"], "alice's chats, over DTLS with no token")
        }
    }

    /// Push over TLS (wss://) with Python's websockets trusting the project's test CA; with
    /// `requireSecure`, ws:// is not opened, and plain HTTP on the TLS port gets no session. A
    /// SIGHUP reloads the certificate while a session stays open.
    func testPushOverTLSWithTheTestCAAndNoClearTextWithRequireSecure() async throws {
        let coapsPort = try await freeUDPPort()
        let tlsPort = try await freeTCPPort()
        try await withServer(secureArguments(coapsPort: coapsPort) + ["--push-tls-port", "\(tlsPort)", "--require-secure"]) { server in
            let alice = try await server.account("alice")
            let python = try ExternalProgram.locate("python3", hint: "apt-get install python3")
            let hello = ClientFrame.hello(Hello(token: alice.token, have: [], clientName: "test")).serializedBytes().map { String(format: "%02x", $0) }.joined()
            func push(_ uri: String, _ frames: [String]) async throws -> [String] {
                let output = try await ExternalProgram.run("/usr/bin/env", ["COURIER_TEST_CA=\(TestCertificates.path("ca.pem"))", python, PushTests.client, uri, "-"] + frames, timeout: 60)
                return output.text.split(separator: "\n").map(String.init)
            }

            // A session that stays open across a SIGHUP (the certificate reloaded meanwhile).
            async let held = push("wss://localhost:\(tlsPort)/v1/push", [hello, "hold:3"])
            try await Task.sleep(for: .seconds(1.5))
            server.signal(SIGHUP)
            let session = try await held
            XCTAssertEqual(session.count, 2, "\(session)")
            guard case .welcome(let greeting)? = session.first.flatMap(PushTests.serverFrame) else { return XCTFail("no Welcome over TLS: \(session)") }
            XCTAssertEqual(greeting.deviceID, alice.deviceID)
            XCTAssertEqual(session.last, "pong", "the session outlived the reload")
            for _ in 0..<50 where !server.serverLog().contains("push TLS certificate reloaded") { try await Task.sleep(for: .milliseconds(100)) }
            XCTAssertTrue(server.serverLog().contains("push TLS certificate reloaded"))

            let again = try await push("wss://localhost:\(tlsPort)/v1/push", [hello])
            XCTAssertTrue(again.first?.hasPrefix("frame ") == true, "a new session after the reload: \(again)")
            let clear = try await push("ws://127.0.0.1:\(server.pushPort)/v1/push", [hello])
            XCTAssertEqual(clear.first?.hasPrefix("unreachable"), true, "no ws:// with requireSecure: \(clear)")
            let plainOnTLS = try await push("ws://127.0.0.1:\(tlsPort)/v1/push", [hello])
            XCTAssertEqual(plainOnTLS.first?.hasPrefix("unreachable"), true, "no session without TLS on the TLS port: \(plainOnTLS)")
        }
    }
}

extension TransportSecurityTests {
    /// `courier` against a server with `requireSecure`: it signs in over push on TLS (the test
    /// CA), sends over CoAP over DTLS with its device key, and reads the history back over DTLS.
    func testCourierSendsOverDTLSWithItsDeviceKeyAndSignsInOverTLS() async throws {
        let coapsPort = try await freeUDPPort()
        let tlsPort = try await freeTCPPort()
        try await withServer(secureArguments(coapsPort: coapsPort) + ["--push-tls-port", "\(tlsPort)", "--require-secure"]) { server in
            let alice = try await server.account("alice", device: "laptop")
            _ = try await server.account("bob")
            _ = try await server.chat("general", members: ["alice", "bob"])
            let key = try await server.admin(["device", "key", "alice", "laptop"])
            let user = ClientEndToEndTests.User("alice")
            let login = try await user.run([
                "login", "--server", "127.0.0.1", "--token=\(alice.token)", "--coaps-port", "\(coapsPort)", "--psk-identity", key["psk_identity"] as! String,
                "--psk-key", key["psk_key"] as! String, "--push-tls-port", "\(tlsPort)", "--ca", TestCertificates.path("ca.pem"),
            ])
            XCTAssertTrue(login.contains("device \(alice.deviceID)"), login)
            let accepted = try await user.run(["send", "general", "over DTLS"])
            XCTAssertTrue(accepted.hasPrefix("accepted"), accepted)
            let history = try await server.waitForHistory("general", count: 1)
            XCTAssertEqual(history.map(\.device), [alice.deviceID])
            let printed = try await user.run(["history", "general"])
            XCTAssertTrue(printed.contains("over DTLS"), printed)

            // The same user's phone, named by its client certificate (common name alice/phone).
            let phone = try await server.admin(["device", "add", "alice", "phone"])
            let withCertificate = ClientEndToEndTests.User("alice-phone")
            try await withCertificate.run([
                "login", "--server", "127.0.0.1", "--token=\(phone["token"] as! String)", "--coaps-port", "\(coapsPort)",
                "--certificate", TestCertificates.path("client-alice-phone.pem"), "--key", TestCertificates.path("client-alice-phone.key"),
                "--push-tls-port", "\(tlsPort)", "--ca", TestCertificates.path("ca.pem"),
            ])
            let second = try await withCertificate.run(["send", "general", "over DTLS with a certificate"])
            XCTAssertTrue(second.hasPrefix("accepted"), second)
            let both = try await server.waitForHistory("general", count: 2)
            XCTAssertEqual(both.map(\.device), [alice.deviceID, (phone["device_id"] as! NSNumber).uint64Value])
        }
    }
}

extension TransportSecurityTests {
    /// A simulated fleet against a server with `requireSecure`: CoAP over DTLS with a key per
    /// device, push over TLS trusting the test CA; the oracle finds nothing lost, repeated or
    /// reordered, and the devices' handshakes all finished.
    func testASimulatedFleetOverDTLSAndTLSLosesNothing() async throws {
        let coapsPort = try await freeUDPPort()
        let tlsPort = try await freeTCPPort()
        try await withServer(secureArguments(coapsPort: coapsPort) + ["--push-tls-port", "\(tlsPort)", "--require-secure"]) { server in
            let run = try await Simulator.run(
                server: "127.0.0.1:\(coapsPort)", pushPort: tlsPort, admin: "http://127.0.0.1:\(server.httpPort)", dataDirectory: server.dataDirectory,
                ["--dtls", "--push-tls", "--ca", TestCertificates.path("ca.pem"), "--users", "20", "--members", "2", "--rate", "2", "--duration", "4", "--ramp-up", "1"],
                timeout: 120
            )
            XCTAssertEqual(run.status, 0, run.table)
            XCTAssertGreaterThan(run.verdictCount("acknowledged"), 50, run.table)
            XCTAssertEqual(run.verdictCount("lost"), 0, run.table)
            XCTAssertEqual(run.verdictCount("delivered"), run.verdictCount("expected_deliveries"), run.table)
            // A device handshakes at its first send; sends are Poisson, so one may (rarely) send
            // nothing in the window. None handshakes twice.
            XCTAssertTrue((36...40).contains(run.count("dtls_handshakes")), run.table)
            XCTAssertEqual(run.count("dtls_handshake_failures"), 0, run.table)
            XCTAssertEqual(run.count("peak_connected"), 40, "every push session over TLS\n\(run.table)")
        }
    }
}
