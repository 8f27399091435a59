import CoAP
import CourierDevice
import CourierProtocol
import Foundation
import NIOCore
import NIOSSL
import Synchronization

/// One simulated device: its own UDP endpoint (with the run's datagram faults), its own push
/// session, and `window` lanes that each send one message at a time at the device's rate.
final class SimDevice: Sendable {
    let index: Int
    private let plan: FleetPlan
    private let settings: SimulationReport.Settings
    private let servers: [SocketAddress]
    /// The node holding this device's push session.
    private let pushNode: Fleet.Node
    /// Where the session goes when its node cannot be reached, in turn.
    private let otherPushNodes: [Fleet.Node]
    private let oracle: DeliveryOracle
    private let stats: FleetStatistics
    private let counters: CoAPCounters
    private let laneClocks: LaneClocks
    private let dtls: FleetDTLS?
    private let pushTLS: NIOSSLContext?
    private let seed: UInt64

    private struct Runtime {
        var endpoint: CoAPEndpoint?
        var push: PushClient?
        var tasks: [Task<Void, Never>] = []
        var stopped = false
    }

    private let runtime = Mutex(Runtime())
    /// What the device holds: its cursors, and the sequence of its newest own message per chat.
    private let store: SimDeviceStore

    init(
        index: Int, plan: FleetPlan, settings: SimulationReport.Settings, servers: [SocketAddress], push: [Fleet.Node],
        oracle: DeliveryOracle, stats: FleetStatistics, counters: CoAPCounters, laneClocks: LaneClocks, dtls: FleetDTLS?, pushTLS: NIOSSLContext?,
        seed: UInt64
    ) {
        self.laneClocks = laneClocks
        self.dtls = dtls
        self.pushTLS = pushTLS
        self.index = index
        self.plan = plan
        self.settings = settings
        self.servers = servers
        self.pushNode = push[0]
        self.otherPushNodes = Array(push.dropFirst())
        self.oracle = oracle
        self.stats = stats
        self.counters = counters
        self.seed = seed
        store = SimDeviceStore(device: index, plan: plan, oracle: oracle)
    }

    private var device: FleetPlan.Device { plan.devices[index] }

    /// Binds the endpoint and opens the push session (kept open, reconnecting, until `stop`).
    func start() async {
        var configuration = CoAPEndpoint.Configuration()
        // A device sends small requests; the default 4 MiB buffers are for servers.
        configuration.socketBufferSize = 256 * 1024
        configuration.counters = counters
        let faults = settings.faults
        if faults.dropOutgoing > 0 || faults.dropIncoming > 0 || faults.duplicateOutgoing > 0 || faults.duplicateIncoming > 0 {
            configuration.faults = DatagramFaults(
                dropOutgoing: faults.dropOutgoing / 100, dropIncoming: faults.dropIncoming / 100,
                duplicateOutgoing: faults.duplicateOutgoing / 100, duplicateIncoming: faults.duplicateIncoming / 100, seed: seed
            )
        }
        if let dtls {
            guard let psk = device.psk else {
                stats.deviceNotStarted("the server gave device \(device.deviceID) no pre-shared key")
                return
            }
            configuration.security = dtls.security(identity: psk.identity, key: psk.key)
        }
        let endpoint: CoAPEndpoint
        do {
            endpoint = try await CoAPEndpoint.bind(host: device.sourceHost, port: 0, serving: false, configuration: configuration)
        } catch {
            stats.deviceNotStarted("cannot bind a UDP endpoint on \(device.sourceHost): \(error)")
            return
        }

        var pushConfiguration = PushClient.Configuration(host: pushNode.host, port: pushNode.pushPort, token: device.token)
        pushConfiguration.clientName = "courier-sim"
        pushConfiguration.tls = pushTLS
        pushConfiguration.otherServers = otherPushNodes.map { ($0.host, $0.pushPort) }
        pushConfiguration.localHost = device.sourceHost == "0.0.0.0" ? nil : device.sourceHost
        let stats = self.stats
        let index = self.index
        let welcomed = Mutex(false)
        pushConfiguration.observer = { event in
            switch event {
            case .connected:
                welcomed.withLock { $0 = true }
                stats.sessionOpened(device: index)
            case .disconnected, .refused:
                let wasOpen = welcomed.withLock { open in
                    defer { open = false }
                    return open
                }
                if wasOpen { stats.sessionClosed() }
                if case .refused(let reason) = event { stats.failed("push session refused: \(reason)") }
            case .connecting:
                break
            }
        }
        let push = PushClient(configuration: pushConfiguration, store: store)
        let pushTask = Task { await push.run() }
        let stillRunning = runtime.withLock { runtime in
            runtime.endpoint = endpoint
            runtime.push = push
            runtime.tasks.append(pushTask)
            return !runtime.stopped
        }
        if !stillRunning { await stop() }
    }

    /// Drops the push session once, at a random time within `window` (seconds from `start`).
    func scheduleDisconnect(within window: (Double, Double), from start: ContinuousClock.Instant) {
        guard !runtime.withLock({ $0.stopped }) else { return }
        var generator = SplitMix64(seed: seed ^ 0xA5A5_A5A5)
        let at = Double.random(in: window.0...max(window.0, window.1), using: &generator)
        let task = Task { [self] in
            try? await ContinuousClock().sleep(until: start + .milliseconds(Int64(at * 1000)))
            guard !Task.isCancelled, let push = runtime.withLock({ $0.push }) else { return }
            stats.disconnectInjected()
            push.dropSession()
        }
        runtime.withLock { $0.tasks.append(task) }
    }

    /// Sends until `deadline`, the budget, or `over`; returns when every lane has stopped
    /// (a lane finishes its message first unless the task is cancelled).
    func send(until deadline: ContinuousClock.Instant?, budget: MessageBudget?, over: Flag) async {
        guard let endpoint = runtime.withLock({ $0.endpoint }), !device.chats.isEmpty else { return }
        let perDevice = min(settings.ratePerDevice, settings.totalRate.map { $0 / Double(max(1, plan.sendingDevices)) } ?? .infinity)
        guard perDevice > 0 else { return }
        // Over DTLS the association names the device: no token in the requests.
        let sender = ReliableSender(endpoint: endpoint, servers: servers, token: dtls == nil ? device.token : "")
        let lanes = settings.window
        let laneRate = perDevice / Double(lanes)
        // The lanes run on the socket's event loop and sleep on its `LaneClock`.
        let laneClock = laneClocks.clock(for: endpoint.eventLoop)
        await withTaskExecutorPreference(EventLoopTaskExecutor(endpoint.eventLoop)) {
            await withDiscardingTaskGroup { group in
                for lane in 0..<lanes {
                    group.addTask { [self] in
                        await runLane(lane, rate: laneRate, sender: sender, laneClock: laneClock, deadline: deadline, budget: budget, over: over)
                    }
                }
            }
        }
    }

    private func runLane(
        _ lane: Int, rate: Double, sender: ReliableSender, laneClock: LaneClock, deadline: ContinuousClock.Instant?, budget: MessageBudget?, over: Flag
    ) async {
        let clock = ContinuousClock()
        var generator = SplitMix64(seed: seed ^ UInt64(lane + 1) &* 0xBF58_476D_1CE4_E5B9)
        // Poisson arrivals: independent devices, as a real fleet sends.
        func interval() -> Duration {
            let uniform = Double.random(in: Double.ulpOfOne..<1, using: &generator)
            return .microseconds(Int64(min(3600, -log(uniform) / rate) * 1_000_000))
        }
        var next = clock.now + interval()
        var laneIndex = 0
        let chats = device.chats
        let padding = settings.messageBytes
        let changeFraction = (settings.changePercent ?? 0) / 100
        while !Task.isCancelled {
            do { try await laneClock.sleep(until: next) } catch { return }
            let now = clock.now
            if over.isSet { return }
            // A send due past the deadline stays unsent, even when woken before it (`earlySlack`).
            if let deadline, max(next, now) >= deadline { return }
            if let budget, !budget.take() { return }
            let chat = chats[Int(generator.next() % UInt64(chats.count))]
            // Timed from when it was due, not when the lane got to it: a lane held up by a
            // slow answer sends late, and that wait is part of the latency (open loop). Woken
            // early (`earlySlack`), from when it is sent, so no latency is flattered.
            guard let (number, clientMessageID) = oracle.willSend(.init(chat: chat, senderDevice: index, lane: lane, laneIndex: laneIndex, sentAt: min(next, now))) else { return }
            laneIndex += 1
            var message = SendMessage(
                clientMessageID: clientMessageID, chatID: plan.chatIDs[chat],
                text: Self.text(clientMessageID, bytes: padding), clientSentAtMs: Int64(Date().timeIntervalSince1970 * 1000)
            )
            // Some sends change the device's newest own message here instead (once one arrived).
            if changeFraction > 0, Double.random(in: 0..<1, using: &generator) < changeFraction, let target = store.newestOwn(chatID: message.chatID) {
                let delete = generator.next() % 2 == 0
                message.change = delete ? .delete(sequence: target) : .edit(sequence: target)
                if delete { message.text = "" }
                stats.changeSent()
            }
            stats.sendStarted()
            defer { stats.sendEnded() }
            let outcome: ReliableSender.Outcome
            do {
                outcome = try await sender.send(message) { attempt in
                    switch attempt {
                    case .deferred(let code, _): stats.answered(code.description)
                    case .failed(let reason, _): stats.failed(reason)
                    }
                }
            } catch {
                return  // cancelled at the end of the drain: counted as unacknowledged
            }
            switch outcome {
            case .accepted(_, let code):
                oracle.acknowledged(number, at: clock.now)
                stats.answered(code.description)
            case .refused(let code, let error):
                oracle.refused(number)
                stats.answered(code.description)
                if let error { stats.failed("refused \(code): \(error.message)") }
            }
            // Behind schedule after a slow answer, the lane sends its due messages back to back.
            next = next + interval()
        }
    }

    /// "sim <id>" padded with dots to `bytes` (at least the id).
    static func text(_ clientMessageID: String, bytes: Int) -> String {
        var head = "sim \(clientMessageID) "
        guard head.utf8.count < bytes else { return head }
        // Written in place: a repeated string and a concatenation were 2% of a fleet's CPU.
        return String(unsafeUninitializedCapacity: bytes) { buffer in
            let headEnd = head.withUTF8 { buffer.initialize(fromContentsOf: $0) }
            buffer[headEnd..<bytes].initialize(repeating: UInt8(ascii: "."))
            return bytes
        }
    }

    /// Ends the push session and closes the endpoint.
    func stop() async {
        let (endpoint, tasks) = runtime.withLock { runtime in
            runtime.stopped = true
            defer { runtime.tasks = [] }
            return (runtime.endpoint, runtime.tasks)
        }
        for task in tasks { task.cancel() }
        runtime.withLock { $0.push }?.dropSession()
        for task in tasks { await task.value }
        await endpoint?.close()
    }
}

/// A simulated device's memory: its cursor per chat. Everything it stores goes to the oracle.
/// It keeps all of it in memory, so its push session stores and acknowledges each push where
/// NIO reads it (`ImmediatePushStore`).
final class SimDeviceStore: ImmediatePushStore {
    private let device: Int
    private let plan: FleetPlan
    private let oracle: DeliveryOracle
    private let held = Mutex<[UInt64: UInt64]>([:])
    /// Per chat: the sequence of the newest message this device sent (not a change).
    private let ownNewest = Mutex<[UInt64: UInt64]>([:])

    init(device: Int, plan: FleetPlan, oracle: DeliveryOracle) {
        self.device = device
        self.plan = plan
        self.oracle = oracle
    }

    func heldCursors() -> [ChatCursor] {
        held.withLock { $0.map { ChatCursor(chatID: $0.key, sequence: $0.value) } }
    }

    func storeNow(_ messages: [ChatMessage]) {
        let now = ContinuousClock.now
        held.withLock { held in
            for message in messages { held[message.chatID] = max(held[message.chatID] ?? 0, message.chatSequence) }
        }
        let own = plan.devices[device].deviceID
        ownNewest.withLock { newest in
            for message in messages where message.senderDeviceID == own && message.change == nil {
                newest[message.chatID] = max(newest[message.chatID] ?? 0, message.chatSequence)
            }
        }
        for message in messages {
            oracle.arrived(device: device, chat: plan.chatIndex[message.chatID] ?? -1, sequence: message.chatSequence, clientMessageID: message.clientMessageID, at: now)
        }
    }

    func deliveredNow(_ receipt: DeliveryReceipt) {}

    /// The sequence of the newest message this device sent into the chat, once it arrived back.
    func newestOwn(chatID: UInt64) -> UInt64? {
        ownNewest.withLock { $0[chatID] }
    }
}
