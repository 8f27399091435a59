import CoAP
import CourierDevice
import CourierProtocol
import DTLS
import Foundation
import NIOSSL
import NIOCore
import Synchronization

/// A fleet of simulated devices in one process, each with its own UDP endpoint and its own
/// push session, sending at a chosen rate through the client's `ReliableSender`, while the
/// `DeliveryOracle` watches every arrival.
public struct Fleet: Sendable {
    /// A server node: its CoAP gateway and its push listener.
    public struct Node: Sendable, Equatable {
        public var host: String
        public var coapPort: Int
        public var pushPort: Int

        public init(host: String, coapPort: Int, pushPort: Int) {
            self.host = host
            self.coapPort = coapPort
            self.pushPort = pushPort
        }
    }

    public struct Options: Sendable {
        public var settings: SimulationReport.Settings
        public var serverHost: String
        public var coapPort: Int
        public var pushPort: Int
        public var provisioning: Provisioning
        public var prefix: String
        /// More nodes of the same cluster besides the one above. Device i keeps its push
        /// session on node i mod N and sends through node i + 1 mod N (so every message crosses
        /// nodes when there are several); a retry after a failure goes to the next node.
        public var otherNodes: [Node] = []
        /// After sending stops: how long unanswered sends may still finish, and how long
        /// acknowledged messages may take to reach every device.
        public var drainTimeout: Duration = .seconds(30)
        public var settleTimeout: Duration = .seconds(30)
        /// Once every acknowledged message has arrived everywhere, how long to keep listening
        /// for a late duplicate before judging.
        public var quietPeriod: Duration = .seconds(2)
        /// Addresses the devices send from, in turn; nil picks them (several loopback
        /// addresses when the server is on loopback).
        public var sourceHosts: [String]?
        /// Devices per source address when they are picked (each needs a UDP and a TCP port).
        public var devicesPerSourceHost = 10_000
        /// Receives the live progress line once a second.
        public var progress: @Sendable (String) -> Void = { _ in }
        /// CoAP over DTLS with a pre-shared key per device: the nodes' CoAP ports are their
        /// DTLS ports, and requests carry no token.
        public var dtls = false
        /// Push over TLS: the nodes' push ports are their `wss://` ports, and this context
        /// (`PushClient.tlsContext`) checks their certificates.
        public var pushTLS: NIOSSLContext?

        public init(settings: SimulationReport.Settings, serverHost: String, coapPort: Int, pushPort: Int, provisioning: Provisioning, prefix: String) {
            self.settings = settings
            self.serverHost = serverHost
            self.coapPort = coapPort
            self.pushPort = pushPort
            self.provisioning = provisioning
            self.prefix = prefix
        }
    }

    public let options: Options

    public init(options: Options) {
        self.options = options
    }

    /// Provisions, runs, waits for the oracle, and reports. Throws only when the fleet cannot
    /// be set up (provisioning, bad addresses); everything after is in the report.
    public func run() async throws -> SimulationReport {
        let settings = options.settings
        let fleet = try await options.provisioning.provision(Provisioning.Request(
            prefix: options.prefix, users: settings.users, devicesPerUser: settings.devicesPerUser,
            chats: settings.chats, membersPerChat: settings.membersPerChat, psk: options.dtls
        ))
        let nodes = [Node(host: options.serverHost, coapPort: options.coapPort, pushPort: options.pushPort)] + options.otherNodes
        let gateways = try nodes.map { try SocketAddress.makeAddressResolvingHost($0.host, port: $0.coapPort) }
        let plan = FleetPlan(
            fleet: fleet, serverHost: options.serverHost, sourceHosts: options.sourceHosts,
            devicesPerSourceHost: options.devicesPerSourceHost, sendersPerChat: settings.sendersPerChat
        )
        // Not from the seed: a rerun with the same seed must not reuse message ids, which the
        // server would take for retries of the earlier run's messages.
        let runID = String(UInt64.random(in: 0 ..< 1 << 40), radix: 36)
        let oracle = DeliveryOracle(runID: runID, deviceCount: plan.devices.count, recipients: plan.recipients) { index in
            let device = plan.devices[index]
            return "device \(device.deviceID) (\(fleet.users[device.user].name)/\(fleet.users[device.user].devices[device.deviceInUser].name))"
        }
        let stats = FleetStatistics()
        let counters = CoAPCounters()
        let laneClocks = LaneClocks()
        let dtls = try options.dtls ? FleetDTLS() : nil
        let clock = ContinuousClock()
        let started = clock.now
        let startedAt = Date()
        if let warmup = settings.warmupSeconds, warmup > 0 {
            oracle.timeMessages(sentFrom: started + .milliseconds(Int64(warmup * 1000)))
        }
        let sendUntil = settings.durationSeconds.map { started + .milliseconds(Int64($0 * 1000)) }
        let budget = settings.messageCount.map { MessageBudget($0) }
        let sendingOver = Flag()
        let lanesDone = Flag()

        // One device's life: its endpoint and push session for the whole run, its lanes until
        // sending stops.
        let devices = plan.devices.indices.map { index in
            SimDevice(
                index: index, plan: plan, settings: settings,
                servers: (1...gateways.count).map { gateways[(index + $0) % gateways.count] }, push: (0..<nodes.count).map { nodes[(index + $0) % nodes.count] }, oracle: oracle,
                stats: stats, counters: counters, laneClocks: laneClocks, dtls: dtls, pushTLS: options.pushTLS, seed: settings.seed ^ (UInt64(index) &* 0x9E37_79B9_7F4A_7C15)
            )
        }
        let rampStep = settings.rampUpSeconds / Double(max(1, devices.count))
        let disconnectWindow = (settings.rampUpSeconds, max(settings.rampUpSeconds, settings.durationSeconds ?? settings.rampUpSeconds + 30))

        let sending = Task {
            defer { lanesDone.set() }
            await withDiscardingTaskGroup { group in
                for device in devices {
                    let startAt = started + .milliseconds(Int64(Double(device.index) * rampStep * 1000))
                    group.addTask {
                        // Every device starts, even one whose turn comes after sending ended:
                        // it is a member device, and the oracle expects it to catch up.
                        try? await clock.sleep(until: startAt)
                        await device.start()
                        guard !Task.isCancelled, !sendingOver.isSet else { return }
                        if draw(seed: settings.seed, device.index, below: 100) < settings.faults.disconnectSessions {
                            device.scheduleDisconnect(within: disconnectWindow, from: started)
                        }
                        await device.send(until: sendUntil, budget: budget, over: sendingOver)
                    }
                }
            }
        }

        // The live line, and the end of sending: the duration, the budget, or the drain.
        var timeline: [SimulationReport.Second] = []
        var last = (acknowledged: 0, arrivals: 0)
        var sendingEndedAt: ContinuousClock.Instant?
        var drainDeadline: ContinuousClock.Instant?
        var tick = started
        while !Task.isCancelled {
            tick = tick + .seconds(1)
            try? await clock.sleep(until: tick)
            let now = clock.now
            let progress = oracle.progress
            let window = oracle.takeLatencyWindow()
            let second = SimulationReport.Second(
                elapsed: (now - started) / .seconds(1),
                connected: stats.connected, sent: progress.sent, acknowledged: progress.acknowledged, delivered: progress.arrivals,
                inFlight: stats.inFlight, acknowledgedPerSecond: Double(progress.acknowledged - last.acknowledged),
                deliveredPerSecond: Double(progress.arrivals - last.arrivals), ackP99: window.ack.p99Milliseconds, deliveryP99: window.delivery.p99Milliseconds
            )
            last = (progress.acknowledged, progress.arrivals)
            if timeline.count < SimulationReport.maxTimeline { timeline.append(second) }
            let phase = sendingEndedAt == nil ? "sending" : "settling"
            options.progress(Self.progressLine(second, phase: phase, deliveryP99: oracle.deliveryP99, outstanding: progress.outstanding))

            if sendingEndedAt == nil {
                let budgetSpent = budget?.isSpent ?? false
                if let sendUntil, now >= sendUntil { sendingOver.set() }
                // The budget spent, the oracle full, or every lane finished (none could send).
                if budgetSpent || oracle.isFull || lanesDone.isSet { sendingOver.set() }
                if sendingOver.isSet {
                    sendingEndedAt = now
                    drainDeadline = now + options.drainTimeout
                }
            }
            if let drainDeadline, stats.inFlight == 0 || now >= drainDeadline {
                sending.cancel()
                break
            }
        }
        await sending.value
        let sendingSeconds = Self.seconds(sendingEndedAt.map { $0 - started } ?? (clock.now - started))

        // Settle: every acknowledged message at every member device, then a quiet period
        // for late duplicates, or the timeout.
        let settleStarted = clock.now
        let settleDeadline = settleStarted + options.settleTimeout
        var quietSince = clock.now
        var arrivalsSeen = oracle.progress.arrivals
        while clock.now < settleDeadline && !Task.isCancelled {
            let now = oracle.progress
            if now.arrivals != arrivalsSeen {
                arrivalsSeen = now.arrivals
                quietSince = clock.now
            }
            if now.outstanding <= 0 && clock.now - quietSince >= options.quietPeriod { break }
            try? await clock.sleep(for: .milliseconds(200))
        }
        let settleSeconds = Self.seconds(clock.now - settleStarted)
        let progress = oracle.progress
        options.progress(Self.progressLine(
            timeline.last ?? SimulationReport.Second(elapsed: 0, connected: 0, sent: 0, acknowledged: 0, delivered: 0, inFlight: 0, acknowledgedPerSecond: 0, deliveredPerSecond: 0, ackP99: 0, deliveryP99: 0),
            phase: "done", deliveryP99: oracle.deliveryP99, outstanding: progress.outstanding
        ))
        await withDiscardingTaskGroup { group in
            for device in devices { group.addTask { await device.stop() } }
        }

        let latencies = oracle.latencies()
        var report = SimulationReport(
            settings: settings, startedAt: startedAt, sendingSeconds: sendingSeconds, settleSeconds: settleSeconds,
            sent: progress.sent, acknowledged: progress.acknowledged, delivered: progress.arrivals,
            sendToAck: latencies.ack, sendToDelivery: latencies.delivery,
            acknowledgedPerSecond: sendingSeconds > 0 ? Double(progress.acknowledged) / sendingSeconds : 0,
            deliveredPerSecond: sendingSeconds > 0 ? Double(progress.arrivals) / sendingSeconds : 0,
            responseCodes: stats.responseCodes, transportFailures: stats.transportFailures,
            retransmissions: counters.retransmissions.load(ordering: .relaxed), reconnects: stats.reconnects,
            injectedDisconnects: stats.injectedDisconnects, datagramsDropped: counters.faultDrops.load(ordering: .relaxed),
            datagramsDuplicated: counters.faultDuplicates.load(ordering: .relaxed), peakConnected: stats.peakConnected,
            timeline: timeline, verdict: oracle.verdict()
        )
        report.devicesNotStarted = stats.devicesNotStarted
        if (settings.changePercent ?? 0) > 0 { report.changesSent = stats.changesSent }
        if let dtls {
            report.dtlsHandshakes = dtls.statistics.handshakesCompleted.load(ordering: .relaxed)
            report.dtlsHandshakeFailures = dtls.statistics.handshakesFailed.load(ordering: .relaxed)
        }
        return report
    }

    static func seconds(_ duration: Duration) -> Double {
        duration / .seconds(1)
    }

    static func progressLine(_ second: SimulationReport.Second, phase: String, deliveryP99: Double, outstanding: Int) -> String {
        func ms(_ value: Double) -> String { value < 10 ? String(format: "%.2f", value) : String(format: "%.0f", value) }
        return String(
            format: "%5.0fs %@  connected %d  sent %d  acked %d  delivered %d  in flight %d  %.0f acked/s  %.0f delivered/s  p99 delivery %@ ms  awaiting %d",
            second.elapsed, phase, second.connected, second.sent, second.acknowledged, second.delivered, second.inFlight,
            second.acknowledgedPerSecond, second.deliveredPerSecond, ms(deliveryP99), outstanding
        )
    }
}

/// A number in 0..<bound, the same for the same device in every run with the same seed.
private func draw(seed: UInt64, _ index: Int, below bound: Double) -> Double {
    var generator = SplitMix64(seed: seed ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03 &+ 1))
    return Double.random(in: 0..<bound, using: &generator)
}

/// Who is who: the fleet's devices in order, each chat's member devices, and where each
/// device sends from.
struct FleetPlan: Sendable {
    struct Device: Sendable {
        var user: Int
        var deviceInUser: Int
        var deviceID: UInt64
        var token: String
        /// Its pre-shared key (identity and key), when the fleet speaks DTLS.
        var psk: (identity: String, key: [UInt8])?
        /// The chats (by index) it sends into: its user's (where the user is a sender).
        var chats: [Int]
        var sourceHost: String
    }

    let devices: [Device]
    /// Per chat index, the device indices that must receive its messages.
    let recipients: [[Int]]
    let chatIDs: [UInt64]
    let chatIndex: [UInt64: Int]
    /// Devices with a chat to send into (a total rate is shared among them).
    let sendingDevices: Int

    init(fleet: Provisioning.Fleet, serverHost: String, sourceHosts: [String]?, devicesPerSourceHost: Int, sendersPerChat: Int? = nil) {
        var userIndex: [UInt64: Int] = [:]
        for (index, user) in fleet.users.enumerated() { userIndex[user.id] = index }
        var chatsOfUser = Array(repeating: [Int](), count: fleet.users.count)
        for (chat, info) in fleet.chats.enumerated() {
            for member in info.memberUserIDs.prefix(sendersPerChat ?? .max) { if let user = userIndex[member] { chatsOfUser[user].append(chat) } }
        }
        let loopback = serverHost == "localhost" || serverHost.hasPrefix("127.")
        var devices: [Device] = []
        var firstDevice: [Int] = []
        for (user, info) in fleet.users.enumerated() {
            firstDevice.append(devices.count)
            for (position, device) in info.devices.enumerated() {
                let index = devices.count
                let host: String
                if let sourceHosts, !sourceHosts.isEmpty {
                    host = sourceHosts[index % sourceHosts.count]
                } else if loopback {
                    host = "127.0.0.\(1 + index / max(1, devicesPerSourceHost))"
                } else {
                    host = "0.0.0.0"
                }
                let psk = device.pskIdentity.flatMap { identity in device.pskKey.map { (identity, Array($0.utf8)) } }
                devices.append(Device(user: user, deviceInUser: position, deviceID: device.id, token: device.token, psk: psk, chats: chatsOfUser[user], sourceHost: host))
            }
        }
        self.devices = devices
        recipients = fleet.chats.map { chat in
            chat.memberUserIDs.compactMap { userIndex[$0] }.flatMap { user in
                (0..<fleet.users[user].devices.count).map { firstDevice[user] + $0 }
            }
        }
        chatIDs = fleet.chats.map(\.id)
        var chatIndex: [UInt64: Int] = [:]
        for (index, id) in chatIDs.enumerated() { chatIndex[id] = index }
        self.chatIndex = chatIndex
        sendingDevices = devices.filter { !$0.chats.isEmpty }.count
    }
}

/// What the progress line and the report count across the fleet.
final class FleetStatistics: Sendable {
    private struct State {
        var connected = 0
        var peakConnected = 0
        var everConnected: Set<Int> = []
        var reconnects = 0
        var injectedDisconnects = 0
        var inFlight = 0
        var changesSent = 0
        var responseCodes: [String: Int] = [:]
        var transportFailures: [String: Int] = [:]
        var devicesNotStarted = 0
    }

    /// Distinct failure kinds kept; the rest count under "other".
    static let maxFailureKinds = 100

    private let state = Mutex(State())

    var connected: Int { state.withLock { $0.connected } }
    var peakConnected: Int { state.withLock { $0.peakConnected } }
    var reconnects: Int { state.withLock { $0.reconnects } }
    var injectedDisconnects: Int { state.withLock { $0.injectedDisconnects } }
    var inFlight: Int { state.withLock { $0.inFlight } }
    var responseCodes: [String: Int] { state.withLock { $0.responseCodes } }
    var transportFailures: [String: Int] { state.withLock { $0.transportFailures } }
    var devicesNotStarted: Int { state.withLock { $0.devicesNotStarted } }

    func sessionOpened(device: Int) {
        state.withLock { state in
            state.connected += 1
            state.peakConnected = max(state.peakConnected, state.connected)
            if !state.everConnected.insert(device).inserted { state.reconnects += 1 }
        }
    }

    func sessionClosed() { state.withLock { $0.connected -= 1 } }
    func disconnectInjected() { state.withLock { $0.injectedDisconnects += 1 } }
    func sendStarted() { state.withLock { $0.inFlight += 1 } }
    func changeSent() { state.withLock { $0.changesSent += 1 } }
    var changesSent: Int { state.withLock { $0.changesSent } }
    func sendEnded() { state.withLock { $0.inFlight -= 1 } }
    func answered(_ code: String) { state.withLock { $0.responseCodes[code, default: 0] += 1 } }

    func failed(_ reason: String) {
        // Reasons carry details (timeouts, addresses); the kind is enough for a table.
        let kind = reason.split(separator: "(").first.map { String($0.prefix(60)) } ?? reason
        state.withLock { state in
            let known = state.transportFailures[kind] != nil || state.transportFailures.count < Self.maxFailureKinds
            state.transportFailures[known ? kind : "other", default: 0] += 1
        }
    }

    func deviceNotStarted(_ reason: String) {
        failed(reason)
        state.withLock { $0.devicesNotStarted += 1 }
    }
}

/// How many messages the run may still start, when it has a count instead of a duration.
final class MessageBudget: Sendable {
    private let remaining: Atomic<Int>

    init(_ count: Int) { remaining = Atomic(count) }

    /// Takes one; false once all were taken.
    func take() -> Bool { remaining.subtract(1, ordering: .relaxed).newValue >= 0 }
    var isSpent: Bool { remaining.load(ordering: .relaxed) <= 0 }
}

final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

/// What the fleet's devices share for DTLS: one OpenSSL client context, and one set of figures.
final class FleetDTLS: Sendable {
    let context: DTLSContext
    let statistics = DTLSStatistics()

    init() throws {
        context = try DTLSContext(role: .client, credentials: .init(psk: true))
    }

    /// A device's security layer, with its own key.
    func security(identity: String, key: [UInt8]) -> DTLSClientSecurity {
        var configuration = DTLSClientConfiguration(context: context, psk: (identity, key))
        configuration.statistics = statistics
        return DTLSClientSecurity(configuration)
    }
}
