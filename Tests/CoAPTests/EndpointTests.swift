import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest
@testable import CoAP

/// Answers POST /echo with the request body (after `delay` for bodies starting with 1), GET /big
/// with 3000 bytes, and counts how often each body was processed.
struct EchoHandler: CoAPRequestHandler {
    let processed = NIOLockedValueBox<[[UInt8]: Int]>([:])
    var delay: Duration = .zero

    static let big = (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 7) }

    func handle(_ request: IncomingRequest) async -> CoAPMessage {
        switch (request.message.code, request.message.uriPath) {
        case (.post, ["echo"]):
            processed.withLockedValue { $0[request.message.payload, default: 0] += 1 }
            if request.message.payload.first == 1 { try? await Task.sleep(for: delay) }
            return .response(.changed, payload: request.message.payload)
        case (.get, ["big"]):
            return .response(.content, payload: Self.big)
        default:
            return .response(.notFound)
        }
    }
}

final class EndpointTests: XCTestCase {
    func testBlockwiseBothWaysBetweenOurEndpoints() async throws {
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true)
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
        let handler = EchoHandler()
        let serving = Task { await server.serve(handler) }
        defer { serving.cancel() }

        let body = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 13) }
        let echoed = try await client.request(.request(.post, path: "/echo", payload: body), to: server.localAddress)
        XCTAssertEqual(echoed.code, .changed)
        XCTAssertEqual(echoed.payload, body, "5000 bytes out in Block1 blocks and back in Block2 blocks")
        XCTAssertEqual(handler.processed.withLockedValue { $0[body] }, 1, "the handler sees one whole request")

        let big = try await client.request(.request(.get, path: "/big"), to: server.localAddress)
        XCTAssertEqual(big.payload, EchoHandler.big)

        let missing = try await client.request(.request(.get, path: "/nothing"), to: server.localAddress)
        XCTAssertEqual(missing.code, .notFound)

        await client.close()
        await server.close()
    }

    func testCancelledCallerDoesNotStartAnExchange() async throws {
        let silent = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
        let peer = silent.localAddress!
        let started = ContinuousClock.now
        let task = Task { () -> CoAPClientError? in
            withUnsafeCurrentTask { $0?.cancel() }
            do throws(CoAPClientError) {
                _ = try await client.exchange(.request(.get, path: "/x"), with: peer)
                return nil
            } catch {
                return error
            }
        }
        let outcome = await task.value
        XCTAssertEqual(outcome, .cancelled)
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(1), "not the whole retransmission schedule")
        await client.close()
        try await silent.close()
    }

    func testRequestsAfterServingStoppedGetServiceUnavailableNotSilence() async throws {
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true)
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
        let serving = Task { await server.serve(EchoHandler()) }
        let before = try await client.request(.request(.post, path: "/echo", payload: [7]), to: server.localAddress)
        XCTAssertEqual(before.code, .changed)
        serving.cancel()
        await serving.value
        let after = try await client.request(.request(.post, path: "/echo", payload: [8]), to: server.localAddress)
        XCTAssertEqual(after.code, .serviceUnavailable, "nobody serves: say so at once instead of leaving the peer waiting")
        XCTAssertNotNil(after.uintOption(.maxAge))
        await client.close()
        await server.close()
    }

    /// A request's handler runs on the event loop of the socket that read it, and stays there
    /// across its awaits: the answer is written where the datagram was read, with no hand-over
    /// between threads.
    func testHandlersRunOnTheirSocketsEventLoopAcrossAwaits() async throws {
        struct LoopProbe: CoAPRequestHandler {
            let loop: any EventLoop
            func handle(_ request: IncomingRequest) async -> CoAPMessage {
                let atStart = loop.inEventLoop
                await Task.yield()
                let afterYield = loop.inEventLoop
                try? await Task.sleep(for: .milliseconds(1))
                let afterSleep = loop.inEventLoop
                return .response(.content, payload: [atStart, afterYield, afterSleep].map { $0 ? 1 : 0 })
            }
        }
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true)
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
        let serving = Task { await server.serve(LoopProbe(loop: server.eventLoop)) }
        defer { serving.cancel() }
        for _ in 0..<20 {
            let answer = try await client.request(.request(.get, path: "/where"), to: server.localAddress)
            XCTAssertEqual(answer.payload, [1, 1, 1], "on the socket's loop at the start, after a yield and after a sleep")
        }
        await client.close()
        await server.close()
    }

    func testEphemeralPortsAreNeverShared() async throws {
        var endpoints: [CoAPEndpoint] = []
        for _ in 0..<300 { endpoints.append(try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)) }
        XCTAssertEqual(Set(endpoints.map { $0.localAddress.port! }).count, 300, "two endpoints on one port would take each other's responses")
        for endpoint in endpoints { await endpoint.close() }
    }

    func testConcurrentBlockwiseTransfersOnOneEndpointStayApart() async throws {
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true)
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
        let serving = Task { await server.serve(EchoHandler()) }
        defer { serving.cancel() }
        let bodies = (0..<4).map { index in (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* (index + 3)) } }
        let echoes = try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            for (index, body) in bodies.enumerated() {
                group.addTask { (index, try await client.request(.request(.post, path: "/echo", payload: body), to: server.localAddress).payload) }
            }
            var echoes: [Int: [UInt8]] = [:]
            for try await (index, echo) in group { echoes[index] = echo }
            return echoes
        }
        for (index, body) in bodies.enumerated() {
            XCTAssertEqual(echoes[index], body, "transfer \(index) came back whole, not spliced with another")
        }
        await client.close()
        await server.close()
    }

    func testRequestBodyAboveTheLimitGetsTooLarge() async throws {
        var configuration = CoAPEndpoint.Configuration()
        configuration.maxBodySize = 2000
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true, configuration: configuration)
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
        let serving = Task { await server.serve(EchoHandler()) }
        defer { serving.cancel() }
        let response = try await client.request(.request(.post, path: "/echo", payload: Array(repeating: 3, count: 5000)), to: server.localAddress)
        XCTAssertEqual(response.code, .requestEntityTooLarge)
        XCTAssertEqual(response.uintOption(.size1), 2000)
        await client.close()
        await server.close()
    }

    func testPeerThatNeverAnswersTimesOut() async throws {
        var configuration = CoAPEndpoint.Configuration()
        configuration.transmission.ackTimeout = .milliseconds(20)
        configuration.transmission.maxRetransmit = 2
        let silent = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
        do {
            _ = try await client.request(.request(.get, path: "/x"), to: silent.localAddress!)
            XCTFail("expected a timeout")
        } catch {
            XCTAssertEqual(error, .timeout)
        }
        await client.close()
        try await silent.close()
    }

    /// Loss and duplication both ways: every request is answered, and processed exactly once.
    func testLossAndDuplicationGiveExactlyOnceProcessing() async throws {
        var configuration = CoAPEndpoint.Configuration()
        configuration.transmission.ackTimeout = .milliseconds(40)
        configuration.transmission.maxRetransmit = 10
        configuration.transmission.piggybackWindow = .milliseconds(10)
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true, configuration: configuration)
        var handler = EchoHandler()
        handler.delay = .milliseconds(30)  // bodies starting with 1 are answered separately
        let serving = Task { [handler] in await server.serve(handler) }
        defer { serving.cancel() }

        let seed = UInt64.random(in: 0...UInt64.max)
        print("lossy proxy seed: \(seed)")
        let clients = 4
        let perClient = 20
        var proxies: [LossyUDPProxy] = []
        var endpoints: [CoAPEndpoint] = []
        for index in 0..<clients {
            proxies.append(try await LossyUDPProxy.start(to: server.localAddress, dropRate: 0.2, duplicateRate: 0.2, seed: seed &+ UInt64(index)))
            endpoints.append(try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<clients {
                let endpoint = endpoints[index]
                let proxy = proxies[index].address
                group.addTask {
                    for number in 0..<perClient {
                        let body: [UInt8] = [UInt8(number % 2), UInt8(index), UInt8(number)]
                        let response = try await endpoint.request(.request(.post, path: "/echo", payload: body), to: proxy)
                        XCTAssertEqual(response.code, .changed)
                        XCTAssertEqual(response.payload, body)
                    }
                }
            }
            try await group.waitForAll()
        }
        let processed = handler.processed.withLockedValue { $0 }
        XCTAssertEqual(processed.count, clients * perClient, "every request reached the handler")
        XCTAssertEqual(processed.values.filter { $0 != 1 }.count, 0, "no request was processed twice (seed \(seed))")
        let dropped = proxies.map(\.counters.dropped).reduce(0, +)
        let duplicated = proxies.map(\.counters.duplicated).reduce(0, +)
        print("lossy proxy: dropped \(dropped), duplicated \(duplicated)")
        XCTAssertGreaterThan(dropped, 10)
        XCTAssertGreaterThan(duplicated, 10)
        for proxy in proxies { await proxy.stop() }
        for endpoint in endpoints { await endpoint.close() }
        await server.close()
    }
}
