import CoAP
import NIOCore
import XCTest

/// The fault injector the simulator puts under its devices' endpoints.
final class DatagramFaultTests: XCTestCase {
    private func serve(_ server: CoAPEndpoint) -> Task<Void, Never> {
        Task { await server.serve(Echo()) }
    }

    private struct Echo: CoAPRequestHandler {
        func handle(_ request: IncomingRequest) async -> CoAPMessage { .response(.content, payload: request.message.payload) }
    }

    func testLossAndDuplicationBothWaysAreCountedAndRetransmissionCoversThem() async throws {
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true)
        let serving = serve(server)
        var configuration = CoAPEndpoint.Configuration()
        configuration.transmission.ackTimeout = .milliseconds(100)
        // At 20% loss each way an attempt fails 36% of the time; 7 attempts all fail 0.08%.
        configuration.transmission.maxRetransmit = 6
        let counters = CoAPCounters()
        configuration.counters = counters
        configuration.faults = DatagramFaults(dropOutgoing: 0.2, dropIncoming: 0.2, duplicateOutgoing: 0.2, duplicateIncoming: 0.2, seed: 7)
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
        for index in 0..<40 {
            let response = try await client.request(.request(.post, path: "/echo", payload: [UInt8(index)]), to: server.localAddress)
            XCTAssertEqual(response.payload, [UInt8(index)])
        }
        XCTAssertGreaterThan(counters.faultDrops.load(ordering: .relaxed), 5)
        XCTAssertGreaterThan(counters.faultDuplicates.load(ordering: .relaxed), 5)
        XCTAssertGreaterThan(counters.retransmissions.load(ordering: .relaxed), 5, "each dropped datagram costs a retransmission")
        await client.close()
        await server.close()
        serving.cancel()
    }

    func testEverythingDroppedMeansNoAnswer() async throws {
        let server = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: true)
        let serving = serve(server)
        var configuration = CoAPEndpoint.Configuration()
        configuration.transmission.ackTimeout = .milliseconds(50)
        configuration.transmission.maxRetransmit = 2
        configuration.faults = DatagramFaults(dropOutgoing: 1, seed: 1)
        let counters = CoAPCounters()
        configuration.counters = counters
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false, configuration: configuration)
        do {
            _ = try await client.request(.request(.get, path: "/echo"), to: server.localAddress)
            XCTFail("a request none of whose datagrams leave must not be answered")
        } catch {
            XCTAssertEqual(counters.faultDrops.load(ordering: .relaxed), 3, "the request and its 2 retransmissions")
        }
        await client.close()
        await server.close()
        serving.cancel()
    }
}
