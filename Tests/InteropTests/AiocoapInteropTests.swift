import CoAP
import Foundation
import NIOCore
import TestSupport
import XCTest

/// Python's aiocoap (PyPI) against our CoAP layer, both directions.
final class AiocoapInteropTests: XCTestCase {
    static let install = "pip install aiocoap (scripts/setup does this)"

    func aiocoapClient(_ arguments: [String]) async throws -> ExternalProgram.Output {
        let client = try ExternalProgram.locate("aiocoap-client", hint: Self.install)
        return try await ExternalProgram.run(client, ["--no-color", "--no-pretty-print"] + arguments)
    }

    // MARK: - aiocoap-client against our server

    func testAiocoapClientGetsABlockwiseResponse() async throws {
        try await withOurServer { base in
            let output = try await aiocoapClient(["\(base)/big"])
            XCTAssertEqual(output.status, 0, output.stderr)
            XCTAssertEqual(output.body, String(decoding: InteropHandler.big, as: UTF8.self))
        }
    }

    func testAiocoapClientPostsABlockwiseRequestAndGetsItBack() async throws {
        try await withOurServer { base in
            let body = String(decoding: InteropBodies.text(3000), as: UTF8.self)
            let output = try await aiocoapClient(["-m", "POST", "--payload", body, "\(base)/echo"])
            XCTAssertEqual(output.status, 0, output.stderr)
            XCTAssertEqual(output.body, body)
        }
    }

    func testAiocoapClientReceivesASeparateResponse() async throws {
        try await withOurServer { base in
            let output = try await aiocoapClient(["-m", "POST", "--payload", "hello", "\(base)/slow"])
            XCTAssertEqual(output.status, 0, output.stderr)
            XCTAssertEqual(output.body, "slow:hello")
        }
    }

    // MARK: - Our client against an aiocoap server

    func testOurClientAgainstAiocoapServer() async throws {
        let python = try ExternalProgram.locate("python3", hint: "install Python 3")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/aiocoap_server.py").path
        let port = try await freeUDPPort()
        try await ExternalProgram.withRunning(python, [script, "\(port)"]) { server in
            var configuration = CoAPEndpoint.Configuration()
            configuration.transmission.ackTimeout = .milliseconds(500)
            let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
            let peer = try SocketAddress(ipAddress: "127.0.0.1", port: port)
            try await waitUntilAnswering(client, peer)
            XCTAssertTrue(server.isRunning, "the aiocoap server must be up (did `pip install aiocoap` run?)")

            let body = InteropBodies.text(3000)
            let echo = try await client.request(.request(.post, path: "/echo", payload: body), to: peer)
            XCTAssertEqual(echo.code, .changed)
            XCTAssertEqual(echo.payload, body, "aiocoap assembled our Block1 blocks; we assembled its Block2 blocks")

            let big = try await client.request(.request(.get, path: "/big"), to: peer)
            XCTAssertEqual(big.code, .content)
            XCTAssertEqual(big.payload.count, 3000)

            let slow = try await client.request(.request(.post, path: "/slow", payload: Array("hi".utf8)), to: peer)
            XCTAssertEqual(slow.code, .changed)
            XCTAssertEqual(slow.payload, Array("slow:hi".utf8), "an empty ACK, then aiocoap's separate response")

            let missing = try await client.request(.request(.get, path: "/nothing"), to: peer)
            XCTAssertEqual(missing.code, .notFound)
            await client.close()
        }
    }
}
