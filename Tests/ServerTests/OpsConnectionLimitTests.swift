import CourierCore
import CourierOps
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

/// The ops listener holds a bounded number of connections: each is a task on its one thread.
final class OpsConnectionLimitTests: XCTestCase {
    func testAConnectionPastTheLimitIsServedOnlyOnceAnotherCloses() async throws {
        let listener = try await Listener(maxConnections: 2, idleTimeout: .seconds(60))
        defer { listener.stop() }

        // Two connections, each answered, and each kept open (HTTP/1.1 keep-alive).
        let first = try await listener.connect()
        let second = try await listener.connect()
        for probe in [first, second] {
            let answer = try await probe.ask(within: .seconds(10))
            XCTAssertTrue(answer?.hasPrefix("HTTP/1.1 200") == true, answer ?? "no answer")
        }
        // The third is not accepted while both are open: its request stays unanswered...
        let third = try await listener.connect()
        let early = try await third.ask(within: .seconds(1))
        XCTAssertNil(early, "served past the limit: \(early ?? "")")
        // ...until one of them closes.
        try await first.channel.close()
        let late = try await third.waitForAnswer(within: .seconds(10))
        XCTAssertTrue(late?.hasPrefix("HTTP/1.1 200") == true, late ?? "still not served after a connection closed")
        try await second.channel.close()
        try await third.channel.close()
    }

    /// Connections that send nothing are closed after the idle timeout, so they cannot hold
    /// every place: a probe that waits behind them is served.
    func testIdleConnectionsAreClosedAndFreeTheirPlaces() async throws {
        let listener = try await Listener(maxConnections: 2, idleTimeout: .seconds(1))
        defer { listener.stop() }
        // Two connections that never send a request: one open, one with half a request.
        let silent = try await listener.connect()
        let halfSent = try await listener.connect()
        try await halfSent.channel.writeAndFlush(ByteBuffer(string: "GET /health HTTP/1.1\r\n"))
        let probe = try await listener.connect()
        let answer = try await probe.ask(within: .seconds(15))
        XCTAssertTrue(answer?.hasPrefix("HTTP/1.1 200") == true, answer ?? "the probe was never served")
        for idle in [silent, halfSent] {
            let closed = try await Self.isClosed(idle.channel, within: .seconds(10))
            XCTAssertTrue(closed, "the server closed an idle connection")
        }
        try await probe.channel.close()
    }

    private static func isClosed(_ channel: any Channel, within wait: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + wait
        while ContinuousClock.now < deadline {
            if !channel.isActive { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

/// An ops listener on a port of its own, run until `stop()`.
private struct Listener {
    let port: Int
    let running: Task<Void, any Error>

    init(maxConnections: Int, idleTimeout: Duration) async throws {
        let service = OpsHTTPService(
            host: "127.0.0.1", port: 0, metrics: ServerMetrics(partitionCount: 1), maxConnections: maxConnections, idleTimeout: idleTimeout,
            logger: Logger(label: "ops-test")
        ) { true }
        running = Task { try await service.run() }
        for _ in 0..<500 where service.listeningPort == nil { try await Task.sleep(for: .milliseconds(10)) }
        guard let port = service.listeningPort else {
            running.cancel()
            XCTFail("the ops listener did not come up")
            throw CancellationError()
        }
        self.port = port
    }

    func connect() async throws -> HealthProbe {
        try await HealthProbe.open(port: port, group: MultiThreadedEventLoopGroup.singleton)
    }

    func stop() { running.cancel() }
}

/// A raw HTTP/1.1 connection that sends `GET /health` and collects what comes back.
private struct HealthProbe {
    let channel: any Channel
    let collector: Collector

    /// What the connection has read.
    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = NIOLockedValueBox("")

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.withLockedValue { $0 += String(buffer: buffer) }
        }
    }

    static func open(port: Int, group: any EventLoopGroup) async throws -> HealthProbe {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return HealthProbe(channel: channel, collector: collector)
    }

    /// Sends one request; returns what came back once a whole header arrived, or nil after `wait`.
    func ask(within wait: Duration) async throws -> String? {
        collector.received.withLockedValue { $0 = "" }
        try await channel.writeAndFlush(ByteBuffer(string: "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        return try await waitForAnswer(within: wait)
    }

    func waitForAnswer(within wait: Duration) async throws -> String? {
        let deadline = ContinuousClock.now + wait
        while ContinuousClock.now < deadline {
            let text = collector.received.withLockedValue { $0 }
            if text.contains("\r\n\r\n") { return text }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }
}
