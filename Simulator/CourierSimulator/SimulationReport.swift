import Foundation

/// Everything a run found, in one value: what the end-of-run table, `--json` and `--html` show.
/// Times are milliseconds unless a name says otherwise.
public struct SimulationReport: Codable, Sendable, Equatable {
    /// What was asked for.
    public struct Settings: Codable, Sendable, Equatable {
        public var server: String
        public var users: Int
        public var devicesPerUser: Int
        public var chats: Int
        public var membersPerChat: Int
        /// Messages per second per device, and the fleet's total cap (nil: no cap).
        public var ratePerDevice: Double
        public var totalRate: Double?
        public var messageBytes: Int
        public var durationSeconds: Double?
        public var messageCount: Int?
        public var rampUpSeconds: Double
        /// Messages one device may have waiting for their answer at once.
        public var window: Int
        public var faults: Faults
        public var seed: UInt64
        /// Only the first this many members of each chat send into it (nil: all of them).
        public var sendersPerChat: Int?
        /// Messages sent in the first this many seconds are judged but not timed (the fleet
        /// is still connecting); nil or 0: all are timed.
        public var warmupSeconds: Double?
        /// Percent of sends that edit or delete (half each) the device's newest own message in
        /// the chat instead of sending a new one; nil or 0: none. The oracle judges a change as
        /// it judges a message (each reaches every member device once, in order).
        public var changePercent: Double?
        /// CoAP over DTLS 1.2 with a pre-shared key per device (nil: clear text).
        public var dtls: Bool?

        public var devices: Int { users * devicesPerUser }

        public init(
            server: String, users: Int, devicesPerUser: Int, chats: Int, membersPerChat: Int,
            ratePerDevice: Double, totalRate: Double?, messageBytes: Int, durationSeconds: Double?,
            messageCount: Int?, rampUpSeconds: Double, window: Int, faults: Faults, seed: UInt64
        ) {
            self.server = server
            self.users = users
            self.devicesPerUser = devicesPerUser
            self.chats = chats
            self.membersPerChat = membersPerChat
            self.ratePerDevice = ratePerDevice
            self.totalRate = totalRate
            self.messageBytes = messageBytes
            self.durationSeconds = durationSeconds
            self.messageCount = messageCount
            self.rampUpSeconds = rampUpSeconds
            self.window = window
            self.faults = faults
            self.seed = seed
        }
    }

    /// Faults injected on the device side, as percentages (0-100).
    public struct Faults: Codable, Sendable, Equatable {
        public var dropOutgoing: Double = 0
        public var dropIncoming: Double = 0
        public var duplicateOutgoing: Double = 0
        public var duplicateIncoming: Double = 0
        /// Share of devices whose push session is dropped once, at a random time in the run.
        public var disconnectSessions: Double = 0

        public init() {}
        public var isEmpty: Bool { self == Faults() }
    }

    /// One latency distribution, summarised from an HdrHistogram.
    public struct Latency: Codable, Sendable, Equatable {
        public var count: Int
        public var p50: Double
        public var p90: Double
        public var p99: Double
        public var p999: Double
        public var max: Double
        public var mean: Double
        /// The distribution for a chart: (percentile 0-100, value ms), from the histogram's
        /// percentile iteration; empty when nothing was recorded.
        public var distribution: [Point]

        public struct Point: Codable, Sendable, Equatable {
            public var percentile: Double
            public var milliseconds: Double
            public init(percentile: Double, milliseconds: Double) {
                self.percentile = percentile
                self.milliseconds = milliseconds
            }
        }

        public init(count: Int, p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double, distribution: [Point]) {
            self.count = count
            self.p50 = p50
            self.p90 = p90
            self.p99 = p99
            self.p999 = p999
            self.max = max
            self.mean = mean
            self.distribution = distribution
        }

        public static let empty = Latency(count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0, distribution: [])
    }

    /// One second of the run, as the live progress line showed it.
    public struct Second: Codable, Sendable, Equatable {
        /// Seconds since the first device started.
        public var elapsed: Double
        public var connected: Int
        /// Running totals.
        public var sent: Int
        public var acknowledged: Int
        public var delivered: Int
        /// Messages sent and not yet answered.
        public var inFlight: Int
        /// Within this second.
        public var acknowledgedPerSecond: Double
        public var deliveredPerSecond: Double
        /// p99 of the latencies recorded within this second (0 when none).
        public var ackP99: Double
        public var deliveryP99: Double

        public init(
            elapsed: Double, connected: Int, sent: Int, acknowledged: Int, delivered: Int, inFlight: Int,
            acknowledgedPerSecond: Double, deliveredPerSecond: Double, ackP99: Double, deliveryP99: Double
        ) {
            self.elapsed = elapsed
            self.connected = connected
            self.sent = sent
            self.acknowledged = acknowledged
            self.delivered = delivered
            self.inFlight = inFlight
            self.acknowledgedPerSecond = acknowledgedPerSecond
            self.deliveredPerSecond = deliveredPerSecond
            self.ackP99 = ackP99
            self.deliveryP99 = deliveryP99
        }
    }

    /// The oracle's finding: every acknowledged message at every member device exactly once,
    /// in chat order.
    public struct Verdict: Codable, Sendable, Equatable {
        public var acknowledged: Int
        /// Acknowledged messages times the devices that should get each.
        public var expectedDeliveries: Int
        /// Distinct arrivals of acknowledged messages at their chats' member devices.
        public var delivered: Int
        /// (acknowledged message, member device) pairs that never arrived within the timeout.
        public var lost: Int
        /// Arrivals of a message at a device that already had it.
        public var duplicates: Int
        /// Arrivals out of order or out of place: a sender lane's message before one it sent
        /// earlier (and had answered) to the same chat, two devices seeing different messages
        /// at one chat position, or a message in another chat or at a device outside its chat.
        public var orderViolations: Int
        /// Messages still unanswered when sending stopped (not counted as lost).
        public var unacknowledged: Int
        /// Up to 50 findings, each naming the message id and the device.
        public var examples: [String]

        public var passed: Bool { lost == 0 && duplicates == 0 && orderViolations == 0 }

        public init(
            acknowledged: Int, expectedDeliveries: Int, delivered: Int, lost: Int, duplicates: Int,
            orderViolations: Int, unacknowledged: Int, examples: [String]
        ) {
            self.acknowledged = acknowledged
            self.expectedDeliveries = expectedDeliveries
            self.delivered = delivered
            self.lost = lost
            self.duplicates = duplicates
            self.orderViolations = orderViolations
            self.unacknowledged = unacknowledged
            self.examples = examples
        }
    }

    public var settings: Settings
    public var startedAt: Date
    /// From the first device starting to the end of sending.
    public var sendingSeconds: Double
    /// From the end of sending until the oracle was satisfied or gave up.
    public var settleSeconds: Double
    public var sent: Int
    public var acknowledged: Int
    /// Arrivals at devices (acknowledged or not, duplicates included).
    public var delivered: Int
    public var sendToAck: Latency
    public var sendToDelivery: Latency
    /// Over `sendingSeconds`.
    public var acknowledgedPerSecond: Double
    public var deliveredPerSecond: Double
    /// Answers by CoAP code ("2.01", "5.03", ...), and failed exchanges by reason.
    public var responseCodes: [String: Int]
    public var transportFailures: [String: Int]
    public var retransmissions: Int
    /// Edits and deletes among `sent` (see `Settings.changePercent`).
    public var changesSent: Int?
    /// Push sessions opened again after the first, and sessions the simulator dropped on purpose.
    public var reconnects: Int
    public var injectedDisconnects: Int
    /// DTLS handshakes the devices finished, and those that failed (a run over DTLS only).
    public var dtlsHandshakes: Int?
    public var dtlsHandshakeFailures: Int?
    /// Datagrams the fault injector dropped and duplicated.
    public var datagramsDropped: Int
    public var datagramsDuplicated: Int
    /// Most devices with an open push session at once.
    public var peakConnected: Int
    /// At most `maxTimeline` seconds (the first ones).
    public var timeline: [Second]
    public var verdict: Verdict
    /// Devices that could not start (no UDP endpoint): a run with any proves less than asked.
    public var devicesNotStarted = 0
    public static let maxTimeline = 86_400

    public init(
        settings: Settings, startedAt: Date, sendingSeconds: Double, settleSeconds: Double,
        sent: Int, acknowledged: Int, delivered: Int, sendToAck: Latency, sendToDelivery: Latency,
        acknowledgedPerSecond: Double, deliveredPerSecond: Double, responseCodes: [String: Int],
        transportFailures: [String: Int], retransmissions: Int, reconnects: Int, injectedDisconnects: Int,
        datagramsDropped: Int, datagramsDuplicated: Int, peakConnected: Int, timeline: [Second], verdict: Verdict
    ) {
        self.settings = settings
        self.startedAt = startedAt
        self.sendingSeconds = sendingSeconds
        self.settleSeconds = settleSeconds
        self.sent = sent
        self.acknowledged = acknowledged
        self.delivered = delivered
        self.sendToAck = sendToAck
        self.sendToDelivery = sendToDelivery
        self.acknowledgedPerSecond = acknowledgedPerSecond
        self.deliveredPerSecond = deliveredPerSecond
        self.responseCodes = responseCodes
        self.transportFailures = transportFailures
        self.retransmissions = retransmissions
        self.reconnects = reconnects
        self.injectedDisconnects = injectedDisconnects
        self.datagramsDropped = datagramsDropped
        self.datagramsDuplicated = datagramsDuplicated
        self.peakConnected = peakConnected
        self.timeline = timeline
        self.verdict = verdict
    }
}
