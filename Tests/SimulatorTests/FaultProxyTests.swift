import CourierSimulator
import NIOCore
import NIOPosix
import Synchronization
import XCTest

/// The fault proxy's decisions with no sockets (same seed, same faults; rates as asked; the
/// partition and reordering), and one relay over loopback.
final class FaultProxyTests: XCTestCase {
    private typealias Machine = FaultProxyState<Int, Int>

    private func plan(seed: UInt64 = 42, _ change: (inout FaultProxyPlan) -> Void = { _ in }) -> FaultProxyPlan {
        var plan = FaultProxyPlan(seed: seed)
        change(&plan)
        return plan
    }

    /// Feeds `count` datagrams, alternating directions, 1 ms apart; returns each one's
    /// emissions as (payload, delay in ms) and the machine.
    private func feed(_ plan: FaultProxyPlan, count: Int) -> (emitted: [[String]], machine: Machine) {
        var machine = Machine(plan: plan)
        var emitted: [[String]] = []
        for index in 0..<count {
            let now = Duration.milliseconds(index)
            let out = machine.received(index, flow: index % 7, direction: index % 2 == 0 ? .upstream : .downstream, now: now)
                + machine.due(now: now)
            emitted.append(out.map { "\($0.payload)@\($0.delay)" })
        }
        return (emitted, machine)
    }

    private let everything: (inout FaultProxyPlan) -> Void = {
        $0.drop = 0.3
        $0.duplicate = 0.1
        $0.reorder = 0.1
        $0.delay = .milliseconds(5) ... .milliseconds(50)
        $0.lateDuplicate = 0.05
        $0.lateAfter = .milliseconds(500)
    }

    func testTheSameSeedMakesTheSameDecisions() {
        let first = feed(plan(seed: 7, everything), count: 5_000)
        let second = feed(plan(seed: 7, everything), count: 5_000)
        let other = feed(plan(seed: 8, everything), count: 5_000)
        XCTAssertEqual(first.emitted, second.emitted)
        XCTAssertEqual(first.machine.totals, second.machine.totals)
        XCTAssertNotEqual(first.emitted, other.emitted, "another seed, other faults")
    }

    func testRatesAreRoughlyAsAskedOverManyDraws() {
        let count = 100_000
        let machine = feed(plan(seed: 20_261_130) {
            $0.drop = 0.3
            $0.duplicate = 0.1
            $0.delay = .milliseconds(1) ... .milliseconds(3)
            $0.lateDuplicate = 0.02
        }, count: count).machine
        let totals = machine.totals
        XCTAssertEqual(totals.received, count)
        XCTAssertEqual(Double(totals.dropped) / Double(count), 0.3, accuracy: 0.01)
        // Duplicates and late copies are drawn among the datagrams that were not dropped.
        XCTAssertEqual(Double(totals.duplicated) / Double(count - totals.dropped), 0.1, accuracy: 0.01)
        XCTAssertEqual(Double(totals.lateHeld) / Double(count - totals.dropped), 0.02, accuracy: 0.005)
        XCTAssertEqual(totals.delayed, count - totals.dropped, "every datagram sent waits 1-3 ms")
        XCTAssertEqual(totals.forwarded, count - totals.dropped + totals.duplicated)
        // Both directions get their share.
        XCTAssertEqual(Double(machine.counters(.upstream).dropped) / Double(count / 2), 0.3, accuracy: 0.015)
        XCTAssertEqual(Double(machine.counters(.downstream).dropped) / Double(count / 2), 0.3, accuracy: 0.015)
    }

    func testDelaysStayInTheirRange() {
        var machine = Machine(plan: plan { $0.delay = .milliseconds(20) ... .milliseconds(40) })
        var delays: [Duration] = []
        for index in 0..<2_000 {
            delays += machine.received(index, flow: 0, direction: .upstream, now: .zero).map(\.delay)
        }
        XCTAssertEqual(delays.count, 2_000)
        XCTAssertGreaterThanOrEqual(delays.min()!, .milliseconds(20))
        XCTAssertLessThanOrEqual(delays.max()!, .milliseconds(40))
        XCTAssertLessThan(delays.min()!, .milliseconds(22))
        XCTAssertGreaterThan(delays.max()!, .milliseconds(38))
    }

    func testThePartitionWindowDropsEverythingBothWays() {
        var machine = Machine(plan: plan { $0.partition = .seconds(10) ..< .seconds(20) })
        var sentAt: [Int: Int] = [:]
        for second in 0..<30 {
            for direction in FaultDirection.allCases {
                let out = machine.received(second, flow: 1, direction: direction, now: .seconds(second))
                sentAt[second, default: 0] += out.count
            }
        }
        for second in 0..<30 {
            XCTAssertEqual(sentAt[second], (10..<20).contains(second) ? 0 : 2, "second \(second)")
        }
        XCTAssertEqual(machine.counters(.upstream).partitioned, 10)
        XCTAssertEqual(machine.counters(.downstream).partitioned, 10)
        XCTAssertEqual(machine.totals.forwarded, 40)
    }

    func testALateDuplicateComesBackAfterItsTimeUnlessThePartitionHasIt() {
        var machine = Machine(plan: plan {
            $0.lateDuplicate = 1
            $0.lateAfter = .seconds(250)
            $0.partition = .seconds(300) ..< .seconds(400)
        })
        XCTAssertEqual(machine.received(1, flow: 9, direction: .upstream, now: .seconds(1)).map(\.payload), [1])
        XCTAssertEqual(machine.received(2, flow: 9, direction: .upstream, now: .seconds(60)).map(\.payload), [2])
        XCTAssertEqual(machine.nextDue, .seconds(251))
        XCTAssertTrue(machine.due(now: .seconds(250)).isEmpty, "not yet")
        let late = machine.due(now: .seconds(251))
        XCTAssertEqual(late.map(\.payload), [1])
        XCTAssertEqual(late.first?.flow, 9)
        XCTAssertEqual(late.first?.direction, .upstream)
        // The second copy falls due at 310 s, inside the partition: dropped.
        XCTAssertTrue(machine.due(now: .seconds(310)).isEmpty)
        XCTAssertEqual(machine.counters(.upstream).lateSent, 1)
        XCTAssertEqual(machine.counters(.upstream).partitioned, 1)
        XCTAssertNil(machine.nextDue)
    }

    func testHeldLateDuplicatesAreBounded() {
        var machine = Machine(plan: plan {
            $0.lateDuplicate = 1
            $0.maxLateDuplicates = 100
        })
        for index in 0..<250 { _ = machine.received(index, flow: 0, direction: .downstream, now: .zero) }
        XCTAssertEqual(machine.lateDuplicatesHeld, 100)
        XCTAssertEqual(machine.counters(.downstream).lateHeld, 100)
        XCTAssertEqual(machine.counters(.downstream).lateRefused, 150)
        XCTAssertEqual(machine.due(now: .seconds(1_000)).count, 100)
        XCTAssertEqual(machine.lateDuplicatesHeld, 0)
    }

    func testReorderHoldsOneBackAndReleasesItAfterTheNext() {
        var machine = Machine(plan: plan { $0.reorder = 1 })
        XCTAssertTrue(machine.received(1, flow: 0, direction: .upstream, now: .zero).isEmpty, "held back")
        XCTAssertEqual(machine.nextDue, .milliseconds(200))
        // A datagram the other way does not release it: each direction keeps its own slot.
        XCTAssertTrue(machine.received(100, flow: 0, direction: .downstream, now: .milliseconds(1)).isEmpty)
        XCTAssertEqual(machine.received(2, flow: 5, direction: .upstream, now: .milliseconds(2)).map(\.payload), [2, 1], "the next overtakes it")
        XCTAssertEqual(machine.counters(.upstream).reordered, 1)
        // The next one is held again; nothing comes, so its hold runs out and it goes alone.
        XCTAssertTrue(machine.received(3, flow: 0, direction: .upstream, now: .milliseconds(3)).isEmpty)
        XCTAssertTrue(machine.due(now: .milliseconds(100)).isEmpty)
        let released = machine.due(now: .milliseconds(203))
        XCTAssertEqual(released.map(\.payload).sorted(), [3, 100])
        XCTAssertEqual(machine.totals.reorderTimeouts, 2)
        XCTAssertEqual(machine.totals.forwarded, 4)
    }

    func testReorderingAtRandomKeepsEveryDatagram() {
        var machine = Machine(plan: plan(seed: 99) { $0.reorder = 0.3 })
        var out: [Int] = []
        for index in 0..<1_000 {
            out += machine.received(index, flow: 0, direction: .upstream, now: .milliseconds(index)).map(\.payload)
        }
        out += machine.due(now: .seconds(10)).map(\.payload)
        XCTAssertEqual(out.sorted(), Array(0..<1_000), "nothing lost or repeated")
        XCTAssertNotEqual(out, Array(0..<1_000), "but not in order")
        let swaps = zip(out, out.dropFirst()).filter { $0 > $1 }.count
        XCTAssertEqual(swaps, machine.counters(.upstream).reordered)
        XCTAssertGreaterThan(swaps, 150)
    }

    /// The NIO relay over loopback: an echo server behind the proxy; two clients each get their
    /// own upstream port, and with no faults every datagram comes back.
    func testTheRelayKeepsOneUpstreamSocketPerClient() async throws {
        let echo = try await Echo.bind()
        let proxy = try await FaultProxy.start(.init(listenHost: "127.0.0.1", listenPort: 0, upstream: echo.localAddress!, plan: plan()))
        let clients = try await [Collector.bind(), Collector.bind()]
        for round in 0..<20 {
            for (index, client) in clients.enumerated() { try await client.send("\(index)-\(round)", to: proxy.localAddress) }
        }
        var upstreamPorts: Set<Substring> = []
        for (index, client) in clients.enumerated() {
            let received = await client.waitFor(20)
            XCTAssertEqual(received.map { String($0.split(separator: "|").first!) }.sorted(), (0..<20).map { "\(index)-\($0)" }.sorted())
            // The echo names the port it saw: one per client, a different one for each.
            let ports = Set(received.map { $0.split(separator: "|").last! })
            XCTAssertEqual(ports.count, 1)
            upstreamPorts.formUnion(ports)
        }
        XCTAssertEqual(upstreamPorts.count, 2)
        let report = await proxy.report()
        XCTAssertEqual(report.clients, 2)
        XCTAssertEqual(report.upstream.forwarded, 40)
        XCTAssertEqual(report.downstream.forwarded, 40)
        await proxy.stop()
        for client in clients { try await client.channel.close() }
        try await echo.close()
    }

    func testTheRelayRefusesNewClientsAtItsBound() async throws {
        let echo = try await Echo.bind()
        var configuration = FaultProxy.Configuration(listenHost: "127.0.0.1", listenPort: 0, upstream: echo.localAddress!, plan: plan())
        configuration.maxClients = 1
        let proxy = try await FaultProxy.start(configuration)
        let first = try await Collector.bind()
        let second = try await Collector.bind()
        try await first.send("a", to: proxy.localAddress)
        _ = await first.waitFor(1)
        try await second.send("b", to: proxy.localAddress)
        try await Task.sleep(for: .milliseconds(300))
        let report = await proxy.report()
        XCTAssertEqual(report.clients, 1)
        XCTAssertEqual(report.clientsRefused, 1)
        let answeredSecond = await second.received
        XCTAssertTrue(answeredSecond.isEmpty)
        await proxy.stop()
        try await first.channel.close()
        try await second.channel.close()
        try await echo.close()
    }

    func testPastTheDelayBoundADatagramGoesAtOnce() async throws {
        let echo = try await Echo.bind()
        var configuration = FaultProxy.Configuration(listenHost: "127.0.0.1", listenPort: 0, upstream: echo.localAddress!, plan: plan {
            $0.delay = .seconds(2) ... .seconds(2)
        })
        configuration.maxDelayed = 1
        let proxy = try await FaultProxy.start(configuration)
        let client = try await Collector.bind()
        for index in 0..<3 { try await client.send("\(index)", to: proxy.localAddress) }
        // Within the first delay: the first waits; the other two go upstream at once, and their
        // answers come back at once too, the one slot still taken.
        try await Task.sleep(for: .milliseconds(500))
        let report = await proxy.report()
        XCTAssertEqual(report.delaysSkipped, 4)
        let early = await client.received
        XCTAssertEqual(early.map { String($0.split(separator: "|").first!) }.sorted(), ["1", "2"])
        XCTAssertEqual(report.upstream.delayed, 3, "all three drew a delay")
        let received = await client.waitFor(3)
        XCTAssertEqual(received.count, 3, "none lost: \(received)")
        await proxy.stop()
        try await client.channel.close()
        try await echo.close()
    }

    func testAnIdleMappingExpiresAndTheDeviceGetsANewOne() async throws {
        let echo = try await Echo.bind()
        var configuration = FaultProxy.Configuration(listenHost: "127.0.0.1", listenPort: 0, upstream: echo.localAddress!, plan: plan())
        configuration.idleTimeout = .milliseconds(300)
        let proxy = try await FaultProxy.start(configuration)
        let client = try await Collector.bind()
        try await client.send("before", to: proxy.localAddress)
        _ = await client.waitFor(1)
        try await Task.sleep(for: .milliseconds(1_500))
        var report = await proxy.report()
        XCTAssertEqual(report.clientsExpired, 1)
        XCTAssertEqual(report.openClients, 0)
        try await client.send("after", to: proxy.localAddress)
        let received = await client.waitFor(2)
        report = await proxy.report()
        XCTAssertEqual(report.clients, 2, "a new mapping")
        XCTAssertEqual(Set(received.map { $0.split(separator: "|").last! }).count, 2, "from a new upstream port: \(received)")
        await proxy.stop()
        try await client.channel.close()
        try await echo.close()
    }
}

/// Answers each datagram with its text and "|" and the sender's port.
private final class Echo: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    static func bind() async throws -> any Channel {
        try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Echo()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let text = String(buffer: envelope.data) + "|\(envelope.remoteAddress.port ?? 0)"
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(string: text))), promise: nil)
    }
}

/// A UDP client that keeps what it receives.
private actor Collector {
    let channel: any Channel
    private(set) var received: [String] = []

    private init(channel: any Channel) { self.channel = channel }

    static func bind() async throws -> Collector {
        let box = Box()
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Inbox(box: box)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let collector = Collector(channel: channel)
        box.collector.withLock { $0 = collector }
        return collector
    }

    func send(_ text: String, to address: SocketAddress) async throws {
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(string: text)))
    }

    func add(_ text: String) { received.append(text) }

    /// Waits up to 5 s for `count` datagrams.
    func waitFor(_ count: Int) async -> [String] {
        let deadline = ContinuousClock.now + .seconds(5)
        while received.count < count && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return received
    }

    final class Box: Sendable {
        let collector = Mutex<Collector?>(nil)
    }

    private final class Inbox: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let box: Box
        init(box: Box) { self.box = box }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let text = String(buffer: unwrapInboundIn(data).data)
            if let collector = box.collector.withLock({ $0 }) { Task { await collector.add(text) } }
        }
    }
}
