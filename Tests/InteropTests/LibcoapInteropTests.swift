import CoAP
import Foundation
import NIOCore
import NIOPosix
import TestSupport
import XCTest

/// libcoap's command-line tools (Debian's libcoap3-bin) against our CoAP layer, both directions.
final class LibcoapInteropTests: XCTestCase {
    static let install = "apt-get install libcoap3-bin (scripts/setup does this)"

    // MARK: - libcoap's coap-client against our server

    func coapClient(_ arguments: [String]) async throws -> ExternalProgram.Output {
        let client = try ExternalProgram.locate("coap-client-notls", hint: Self.install)
        return try await ExternalProgram.run(client, ["-B", "20"] + arguments)
    }

    func testCoapClientGetsABlockwiseResponse() async throws {
        try await withOurServer { base in
            let output = try await coapClient(["-m", "get", "\(base)/big"])
            XCTAssertEqual(output.status, 0, output.stderr)
            XCTAssertEqual(output.body, String(decoding: InteropHandler.big, as: UTF8.self), "coap-client reassembled our Block2 response")
        }
    }

    func testCoapClientPostsABlockwiseRequestAndGetsItBack() async throws {
        try await withOurServer { base in
            let body = InteropBodies.text(3000)
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("courier-interop-\(UUID().uuidString)")
            try Data(body).write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            // -b 256: coap-client sends 256-byte Block1 blocks and asks for 256-byte Block2 blocks.
            let output = try await coapClient(["-m", "post", "-b", "256", "-f", file.path, "\(base)/echo"])
            XCTAssertEqual(output.status, 0, output.stderr)
            XCTAssertEqual(output.body, String(decoding: body, as: UTF8.self), "our server assembled coap-client's Block1 request and sliced the echo")
        }
    }

    func testCoapClientReceivesASeparateResponse() async throws {
        try await withOurServer { base in
            let output = try await coapClient(["-m", "post", "-e", "hello", "\(base)/slow"])
            XCTAssertEqual(output.status, 0, output.stderr)
            XCTAssertEqual(output.body, "slow:hello")
        }
    }

    func testCoapClientSeesErrorCodes() async throws {
        try await withOurServer { base in
            let output = try await coapClient(["-v", "6", "-m", "get", "\(base)/nothing"])
            XCTAssertTrue((output.text + output.stderr).contains("4.04"), "coap-client prints the 4.04: \(output.text) \(output.stderr)")
        }
    }

    // MARK: - Our client against libcoap's coap-server

    func testOurClientAgainstCoapServerBlockwiseBothWays() async throws {
        let serverPath = try ExternalProgram.locate("coap-server-notls", hint: Self.install)
        let port = try await freeUDPPort()
        try await ExternalProgram.withRunning(serverPath, ["-A", "127.0.0.1", "-p", "\(port)", "-d", "10"]) { _ in
            var configuration = CoAPEndpoint.Configuration()
            configuration.transmission.ackTimeout = .milliseconds(200)
            let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
            let peer = try SocketAddress(ipAddress: "127.0.0.1", port: port)
            try await waitUntilAnswering(client, peer)

            // PUT creates a resource with 3000 bytes: our Block1 blocks, assembled by libcoap.
            let body = InteropBodies.text(3000)
            let put = try await client.request(.request(.put, path: "/interop/data", payload: body, contentFormat: CoAPContentFormat.textPlain), to: peer)
            XCTAssertTrue(put.code.isSuccess, "coap-server answered \(put.code)")
            // GET returns it in Block2 blocks, reassembled by us.
            let get = try await client.request(.request(.get, path: "/interop/data"), to: peer)
            XCTAssertEqual(get.code, .content)
            XCTAssertEqual(get.payload, body)
            let missing = try await client.request(.request(.get, path: "/not/there"), to: peer)
            XCTAssertEqual(missing.code, .notFound)
            await client.close()
        }
    }
}
