import CoreMetrics
import Foundation
import Synchronization
import Prometheus

/// The server's metrics, through swift-metrics into one Prometheus registry per server (not the
/// process-wide bootstrap, so tests can run several servers in one process).
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let requestCounters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let appendCounters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let replayCounters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let lagGauges: [CoreMetrics.Gauge]
    private let liveGauges: [String: CoreMetrics.Gauge]
    public let appendLatency: CoreMetrics.Timer
    private let pushSessions: CoreMetrics.Gauge
    private let openPushSessions = Mutex(0)
    private let pushCounter: CoreMetrics.Counter
    private let resendCounter: CoreMetrics.Counter
    private let offsetCommitCounter: CoreMetrics.Counter
    private let closeCounters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let provisionCounters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let dedupEntries: CoreMetrics.Gauge
    /// Gauges read from their owner when /metrics is scraped, rather than pushed on every change.
    private let liveDevices: CoreMetrics.Gauge
    private let pushStrangers: CoreMetrics.Gauge
    private let storeTransactions: CoreMetrics.Gauge
    private let storeBatches: CoreMetrics.Gauge
    private let clusterNews: [String: CoreMetrics.Gauge]
    private let dtls: [String: CoreMetrics.Gauge]
    /// What `courier_dtls_*` reports, named as `DTLSStatistics.snapshot` names it.
    package static let dtlsNames = ["associations", "handshaking", "handshakes_completed", "handshakes_failed", "hello_verify_requests", "dropped_datagrams", "evicted", "expired"]
    private let scrapeHooks = Mutex<[@Sendable () async -> Void]>([])

    public init(partitionCount: Int) {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
        ]
        self.factory = factory
        appendLatency = CoreMetrics.Timer(label: "courier_log_append_duration_seconds", factory: factory)
        lagGauges = (0..<partitionCount).map {
            CoreMetrics.Gauge(label: "courier_consumer_lag_records", dimensions: [("partition", String($0))], factory: factory)
        }
        pushSessions = CoreMetrics.Gauge(label: "courier_push_sessions", factory: factory)
        dedupEntries = CoreMetrics.Gauge(label: "courier_coap_dedup_entries", factory: factory)
        pushCounter = CoreMetrics.Counter(label: "courier_push_messages_total", factory: factory)
        resendCounter = CoreMetrics.Counter(label: "courier_push_resends_total", factory: factory)
        offsetCommitCounter = CoreMetrics.Counter(label: "courier_consumer_offset_commits_total", factory: factory)
        liveDevices = CoreMetrics.Gauge(label: "courier_live_devices", factory: factory)
        pushStrangers = CoreMetrics.Gauge(label: "courier_push_strangers", factory: factory)
        storeTransactions = CoreMetrics.Gauge(label: "courier_store_transactions", factory: factory)
        storeBatches = CoreMetrics.Gauge(label: "courier_store_batches", factory: factory)
        clusterNews = Dictionary(uniqueKeysWithValues: ClusterNewsStatistics.names.map {
            ($0, CoreMetrics.Gauge(label: "courier_cluster_news_\($0)", factory: factory))
        })
        dtls = Dictionary(uniqueKeysWithValues: Self.dtlsNames.map { ($0, CoreMetrics.Gauge(label: "courier_dtls_\($0)", factory: factory)) })
        liveGauges = Dictionary(uniqueKeysWithValues: ["device", "chat"].map {
            ($0, CoreMetrics.Gauge(label: "courier_live_actors", dimensions: [("type", $0)], factory: factory))
        })
    }

    /// One CoAP request answered with `code` (e.g. "2.01").
    public func countRequest(code: String) {
        counter(in: requestCounters, label: "courier_coap_requests_total", dimension: "code", value: code).increment()
    }

    /// One log append that ended with `result` ("ok", "overloaded", "disk_full", "failed").
    public func countAppend(result: String) {
        counter(in: appendCounters, label: "courier_log_appends_total", dimension: "result", value: result).increment()
    }

    /// A send whose client_message_id the device had used before, answered with the first
    /// answer and not appended again; `answeredFrom` is "in_flight" (still on its way to
    /// storage) or "storage". CoAP's own dedup replays its cached reply without counting here,
    /// so these are the retries only the application's dedup caught.
    public func countReplay(answeredFrom: String) {
        counter(in: replayCounters, label: "courier_send_replays_total", dimension: "answered_from", value: answeredFrom).increment()
    }

    /// One consumer offset committed (durably, two syncs).
    public func countOffsetCommit() {
        offsetCommitCounter.increment()
    }

    public func recordLag(partition: Int, records: UInt64) {
        guard lagGauges.indices.contains(partition) else { return }
        lagGauges[partition].record(Double(records))
    }

    /// Push connections that have not shown a valid token yet.
    package func recordPushStrangers(_ count: Int) {
        pushStrangers.record(Double(count))
    }

    /// Devices with a push session, which the fan-out reaches.
    package func recordLiveDevices(_ count: Int) {
        liveDevices.record(Double(count))
    }

    /// Store transactions the consumers wrote, and the partition batches they carried: the
    /// ratio is the group-commit factor across partitions.
    package func recordStoreWrites(transactions: Int, batches: Int) {
        storeTransactions.record(Double(transactions))
        storeBatches.record(Double(batches))
    }

    /// What this node of a cluster told the others, and heard from them.
    package func recordClusterNews(_ statistics: ClusterNewsStatistics) {
        for (name, value) in statistics.values { clusterNews[name]?.record(value) }
    }

    /// The DTLS layer's associations and handshakes, across the gateway's sockets.
    package func recordDTLS(_ snapshot: [String: Int]) {
        for (name, value) in snapshot { dtls[name]?.record(Double(value)) }
    }

    public func recordLiveActors(type: String, count: Int) {
        liveGauges[type]?.record(Double(count))
    }

    /// A push session opened (+1) or ended (-1).
    public func changePushSessions(by delta: Int) {
        let open = openPushSessions.withLock { open in
            open += delta
            return open
        }
        pushSessions.record(Double(open))
    }

    /// A push session closed by the server for `reason` (a short fixed word, e.g. "heartbeat").
    public func countPushClose(reason: String) {
        counter(in: closeCounters, label: "courier_push_closes_total", dimension: "reason", value: reason).increment()
    }

    /// Messages pushed to devices (each resend counts again).
    public func countPushes(_ count: Int) {
        if count > 0 { pushCounter.increment(by: count) }
    }

    /// Chats whose unacknowledged pushes were sent again after the acknowledgement timeout.
    public func countResends(_ count: Int) {
        if count > 0 { resendCounter.increment(by: count) }
    }

    /// One admin provision that ended with `result` ("ok", "refused", "failed").
    public func countProvision(result: String) {
        counter(in: provisionCounters, label: "courier_admin_provisions_total", dimension: "result", value: result).increment()
    }

    /// (peer, Message ID) pairs the gateway's CoAP deduplication caches hold.
    public func recordDedupEntries(_ count: Int) {
        dedupEntries.record(Double(count))
    }

    /// Runs `hook` before every scrape, to read a gauge from its owner.
    public func onScrape(_ hook: @escaping @Sendable () async -> Void) {
        scrapeHooks.withLock { $0.append(hook) }
    }

    /// The exposition after the scrape hooks have run: what /metrics serves.
    public func scrape() async -> String {
        for hook in scrapeHooks.withLock({ $0 }) { await hook() }
        return exposition()
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> String { registry.emitToString() }

    private func counter(in box: borrowing Mutex<[String: CoreMetrics.Counter]>, label: String, dimension: String, value: String) -> CoreMetrics.Counter {
        box.withLock { counters in
            if let existing = counters[value] { return existing }
            let counter = CoreMetrics.Counter(label: label, dimensions: [(dimension, value)], factory: factory)
            // Values are a small fixed set (response codes, outcomes); the bound guards a bug.
            if counters.count < 256 { counters[value] = counter }
            return counter
        }
    }
}

/// Totals of a cluster node's news since it started (see `ClusterNotifications`).
package struct ClusterNewsStatistics: Sendable, Equatable {
    /// NOTIFY statements sent (each one round trip, carrying one or more payloads).
    package var statements = 0
    package var payloads = 0
    package var payloadBytes = 0
    /// Time spent waiting for the NOTIFY statements, in seconds.
    package var notifySeconds = 0.0
    /// Payloads heard from the other nodes.
    package var received = 0

    package init() {}

    static let names = ["statements", "payloads", "payload_bytes", "notify_seconds", "received"]

    var values: [(String, Double)] {
        [("statements", Double(statements)), ("payloads", Double(payloads)), ("payload_bytes", Double(payloadBytes)), ("notify_seconds", notifySeconds), ("received", Double(received))]
    }
}
