import CoAP
import TestSupport
import Foundation
import NIOCore
import NIOPosix

/// Runs `body` with our CoAP server serving `InteropHandler` on a loopback port; `body` gets its
/// base URI. The server is closed however `body` ends.
func withOurServer(_ body: (String) async throws -> Void) async throws {
    try await withOurServer(configuration: CoAPEndpoint.Configuration()) { port in try await body("coap://127.0.0.1:\(port)") }
}

/// Our CoAP server with `configuration` on a free loopback port, serving `InteropHandler`'s
/// resources while `body` runs with its port.
func withOurServer(configuration: CoAPEndpoint.Configuration, _ body: (Int) async throws -> Void) async throws {
    let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true, configuration: configuration)
    async let serving: Void = server.serve(InteropHandler())
    do {
        try await body(server.localAddress.port!)
    } catch {
        await server.close()
        await serving
        throw error
    }
    await server.close()
    await serving
}

/// Polls a freshly started peer until it answers a GET (any code), for up to 10 s.
func waitUntilAnswering(_ client: CoAPEndpoint, _ peer: SocketAddress) async throws {
    let deadline = Date().addingTimeInterval(10)
    while true {
        do {
            _ = try await withThrowingTaskGroup(of: CoAPMessage.self) { group in
                group.addTask { try await client.exchange(.request(.get, path: "/"), with: peer) }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(300))
                    throw CoAPClientError.timeout
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
            return
        } catch {
            if Date() > deadline { throw error }
        }
    }
}
