import Foundation
import Histogram
import Synchronization

/// Knows every message the run sent and every arrival at every device, and judges the server
/// by Courier's promise: every acknowledged message reaches every device of every member of
/// its chat exactly once, in chat order.
///
/// Order is judged per lane and chat: a lane sends its next message only after the previous
/// one was answered, so the server must keep a lane's messages to one chat in the order sent.
/// Two devices must also see the same message at the same chat position, and a message must
/// reach only its chat's member devices.
///
/// Bound: it remembers every message of the run and every arrival, so a run may send at most
/// `maxMessages`; past it `willSend` refuses and sending ends.
public final class DeliveryOracle: Sendable {
    /// A message the run sent, numbered from 0 in the order sends started.
    public struct SentMessage: Sendable {
        public var chat: Int
        public var senderDevice: Int
        public var lane: Int
        /// The message's place among its lane's messages.
        public var laneIndex: Int
        public var sentAt: ContinuousClock.Instant
    }

    private struct MessageState {
        var sent: SentMessage
        var acknowledged = false
        var refused = false
        /// Distinct member devices it reached.
        var arrivals: Int32 = 0
    }

    private struct LaneKey: Hashable {
        var senderDevice: Int
        var lane: Int
        var chat: Int
    }

    private struct DeviceState {
        /// Message number to the chat position it arrived at.
        var received: [Int: UInt64] = [:]
        /// Per sender lane and chat: the highest lane index that arrived here.
        var laneProgress: [LaneKey: Int] = [:]
    }

    private struct State {
        var messages: [MessageState] = []
        var devices: [DeviceState]
        /// Per chat: the message seen at each position (this run's messages only).
        var positions: [[UInt64: Int]]
        var acknowledged = 0
        var refused = 0
        var arrivals = 0
        /// Acknowledged (message, device) pairs not yet arrived.
        var outstanding = 0
        var duplicates = 0
        var orderViolations = 0
        var examples: [String] = []
        /// Messages sent before this are judged but not timed (warm-up).
        var timedFrom: ContinuousClock.Instant?
        func isTimed(_ message: SentMessage) -> Bool { timedFrom.map { message.sentAt >= $0 } ?? true }
        var ackLatency = LatencyRecorder()
        var deliveryLatency = LatencyRecorder()
    }

    /// The devices of each chat's members, by the fleet's device index.
    public let recipients: [[Int]]
    private let recipientSets: [Set<Int>]
    /// The most messages one run may send (about 1 GiB of oracle state with 8 devices a chat).
    public static let maxMessages = 2_000_000
    /// Turns a device index into the name a tester finds in the server's data ("device 812").
    private let deviceName: @Sendable (Int) -> String
    public let runID: String
    private let state: Mutex<State>
    public static let maxExamples = 50

    public init(runID: String, deviceCount: Int, recipients: [[Int]], deviceName: @escaping @Sendable (Int) -> String) {
        self.runID = runID
        self.recipients = recipients
        recipientSets = recipients.map(Set.init)
        self.deviceName = deviceName
        state = Mutex(State(devices: Array(repeating: DeviceState(), count: deviceCount), positions: Array(repeating: [:], count: recipients.count)))
    }

    // MARK: - The run reports

    /// Times only messages sent from `instant` on.
    public func timeMessages(sentFrom instant: ContinuousClock.Instant) {
        state.withLock { $0.timedFrom = instant }
    }

    /// Records a send about to start and returns its client message id; nil once the run
    /// has sent `maxMessages`.
    public func willSend(_ message: SentMessage) -> (number: Int, clientMessageID: String)? {
        let number: Int? = state.withLock { state in
            guard state.messages.count < Self.maxMessages else { return nil }
            state.messages.append(MessageState(sent: message))
            return state.messages.count - 1
        }
        return number.map { ($0, clientMessageID($0)) }
    }

    public var isFull: Bool { state.withLock { $0.messages.count >= Self.maxMessages } }

    public func clientMessageID(_ number: Int) -> String { "\(runID)-\(number)" }

    /// The message number in a client message id of this run; nil for anything else.
    public func messageNumber(_ clientMessageID: String) -> Int? {
        guard clientMessageID.hasPrefix(runID), clientMessageID.utf8.count > runID.utf8.count + 1 else { return nil }
        let rest = clientMessageID.utf8.dropFirst(runID.utf8.count)
        guard rest.first == UInt8(ascii: "-") else { return nil }
        return Int(Substring(rest.dropFirst()))
    }

    public func acknowledged(_ number: Int, at instant: ContinuousClock.Instant) {
        state.withLock { state in
            guard state.messages.indices.contains(number), !state.messages[number].acknowledged else { return }
            state.messages[number].acknowledged = true
            state.acknowledged += 1
            let message = state.messages[number]
            state.outstanding += recipients[message.sent.chat].count - Int(message.arrivals)
            if state.isTimed(message.sent) { state.ackLatency.record(instant - message.sent.sentAt) }
        }
    }

    public func refused(_ number: Int) {
        state.withLock { state in
            guard state.messages.indices.contains(number), !state.messages[number].refused else { return }
            state.messages[number].refused = true
            state.refused += 1
        }
    }

    /// A message stored by a device, at chat position `sequence`. Messages of other runs
    /// (not this run's ids) are ignored.
    public func arrived(device: Int, chat: Int, sequence: UInt64, clientMessageID: String, at instant: ContinuousClock.Instant) {
        guard let number = messageNumber(clientMessageID) else { return }
        state.withLock { state in
            guard state.messages.indices.contains(number), state.devices.indices.contains(device) else { return }
            state.arrivals += 1
            let message = state.messages[number]
            if let earlier = state.devices[device].received[number] {
                state.duplicates += 1
                note(&state, "duplicate: message \(clientMessageID) reached \(deviceName(device)) twice (chat positions \(earlier) and \(sequence))")
                return
            }
            state.devices[device].received[number] = sequence
            if chat != message.sent.chat {
                state.orderViolations += 1
                note(&state, "misplaced: message \(clientMessageID) sent to chat #\(message.sent.chat) reached \(deviceName(device)) in chat #\(chat)")
                return
            }
            guard recipientSets[message.sent.chat].contains(device) else {
                state.orderViolations += 1
                note(&state, "misplaced: message \(clientMessageID) reached \(deviceName(device)), which is not a member's device of chat #\(message.sent.chat)")
                return
            }
            state.messages[number].arrivals += 1
            if message.acknowledged { state.outstanding -= 1 }
            // Delivery is reaching another device than the one that sent it (the sender's own
            // device gets it too); every such arrival is timed.
            if device != message.sent.senderDevice && state.isTimed(message.sent) {
                state.deliveryLatency.record(instant - message.sent.sentAt)
            }

            if let other = state.positions[message.sent.chat][sequence], other != number {
                state.orderViolations += 1
                note(&state, "order: \(deviceName(device)) has message \(clientMessageID) at chat position \(sequence), where another device has \(self.clientMessageID(other))")
            } else {
                state.positions[message.sent.chat][sequence] = number
            }
            let lane = LaneKey(senderDevice: message.sent.senderDevice, lane: message.sent.lane, chat: message.sent.chat)
            if let last = state.devices[device].laneProgress[lane], last > message.sent.laneIndex {
                state.orderViolations += 1
                note(&state, "order: message \(clientMessageID) reached \(deviceName(device)) after a later message of the same sender to the same chat")
            }
            state.devices[device].laneProgress[lane] = max(state.devices[device].laneProgress[lane] ?? -1, message.sent.laneIndex)
        }
    }

    private func note(_ state: inout State, _ finding: String) {
        if state.examples.count < Self.maxExamples { state.examples.append(finding) }
    }

    // MARK: - What it knows

    public struct Progress: Sendable {
        public var sent: Int
        public var acknowledged: Int
        public var refused: Int
        public var arrivals: Int
        /// Acknowledged (message, device) pairs still to arrive.
        public var outstanding: Int
    }

    public var progress: Progress {
        state.withLock { Progress(sent: $0.messages.count, acknowledged: $0.acknowledged, refused: $0.refused, arrivals: $0.arrivals, outstanding: $0.outstanding) }
    }

    /// The latencies recorded since the last call (for the per-second line), and in all.
    public func takeLatencyWindow() -> (ack: LatencyRecorder.Window, delivery: LatencyRecorder.Window) {
        state.withLock { ($0.ackLatency.takeWindow(), $0.deliveryLatency.takeWindow()) }
    }

    /// The p99 send->delivery so far, for the live line.
    public var deliveryP99: Double { state.withLock { $0.deliveryLatency.p99Milliseconds } }

    public func latencies() -> (ack: SimulationReport.Latency, delivery: SimulationReport.Latency) {
        state.withLock { ($0.ackLatency.summary(), $0.deliveryLatency.summary()) }
    }

    /// The verdict now: anything acknowledged and not arrived counts as lost.
    public func verdict() -> SimulationReport.Verdict {
        state.withLock { state in
            var lost = 0
            var expected = 0
            var delivered = 0
            var lostExamples: [String] = []
            for (number, message) in state.messages.enumerated() where message.acknowledged {
                let members = recipients[message.sent.chat]
                expected += members.count
                delivered += Int(message.arrivals)
                let missing = members.count - Int(message.arrivals)
                guard missing > 0 else { continue }
                lost += missing
                if state.examples.count + lostExamples.count < Self.maxExamples {
                    let absent = members.filter { state.devices[$0].received[number] == nil }
                    let names = absent.prefix(3).map(deviceName).joined(separator: ", ")
                    lostExamples.append("lost: message \(clientMessageID(number)) (acknowledged) never reached \(names)\(absent.count > 3 ? " and \(absent.count - 3) more" : "")")
                }
            }
            let unacknowledged = state.messages.count - state.acknowledged - state.refused
            return SimulationReport.Verdict(
                acknowledged: state.acknowledged, expectedDeliveries: expected, delivered: delivered, lost: lost,
                duplicates: state.duplicates, orderViolations: state.orderViolations, unacknowledged: unacknowledged,
                examples: lostExamples + state.examples
            )
        }
    }
}

/// Latencies in an HdrHistogram (microseconds, 3 significant digits), all of them and the
/// current window.
public struct LatencyRecorder: Sendable {
    public struct Window: Sendable {
        public var count: Int
        public var p99Milliseconds: Double
    }

    private var all = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    private var window = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    private var sum: Double = 0

    public init() {}

    public mutating func record(_ duration: Duration) {
        let micros = UInt64(clamping: max(1, duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000))
        _ = all.record(min(micros, 3_600_000_000))
        _ = window.record(min(micros, 3_600_000_000))
        sum += Double(micros)
    }

    public mutating func takeWindow() -> Window {
        defer { window.reset() }
        return Window(count: Int(window.totalCount), p99Milliseconds: window.totalCount == 0 ? 0 : Double(window.valueAtPercentile(99)) / 1000)
    }

    public var p99Milliseconds: Double { all.totalCount == 0 ? 0 : Double(all.valueAtPercentile(99)) / 1000 }

    public func summary() -> SimulationReport.Latency {
        guard all.totalCount > 0 else { return .empty }
        func ms(_ percentile: Double) -> Double { Double(all.valueAtPercentile(percentile)) / 1000 }
        var points: [SimulationReport.Latency.Point] = []
        for step in all.percentiles(ticksPerHalfDistance: 5) {
            points.append(.init(percentile: step.percentileLevelIteratedTo, milliseconds: Double(step.value) / 1000))
            if points.count >= 200 { break }
        }
        return SimulationReport.Latency(
            count: Int(all.totalCount), p50: ms(50), p90: ms(90), p99: ms(99), p999: ms(99.9),
            max: Double(all.max) / 1000, mean: sum / Double(all.totalCount) / 1000, distribution: points
        )
    }
}
