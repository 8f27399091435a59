import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import Prometheus

/// The server's metrics, through swift-metrics into one Prometheus registry per server (not the
/// process-wide bootstrap, so tests can run several servers in one process).
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let requestCounters = NIOLockedValueBox<[String: CoreMetrics.Counter]>([:])
    private let appendCounters = NIOLockedValueBox<[String: CoreMetrics.Counter]>([:])
    private let lagGauges: [CoreMetrics.Gauge]
    private let liveGauges: [String: CoreMetrics.Gauge]
    public let appendLatency: CoreMetrics.Timer

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
        liveGauges = Dictionary(uniqueKeysWithValues: ["user", "device", "chat"].map {
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

    public func recordLag(partition: Int, records: UInt64) {
        guard lagGauges.indices.contains(partition) else { return }
        lagGauges[partition].record(Double(records))
    }

    public func recordLiveActors(type: String, count: Int) {
        liveGauges[type]?.record(Double(count))
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> String { registry.emitToString() }

    private func counter(in box: NIOLockedValueBox<[String: CoreMetrics.Counter]>, label: String, dimension: String, value: String) -> CoreMetrics.Counter {
        box.withLockedValue { counters in
            if let existing = counters[value] { return existing }
            let counter = CoreMetrics.Counter(label: label, dimensions: [(dimension, value)], factory: factory)
            // Values are a small fixed set (response codes, outcomes); the bound guards a bug.
            if counters.count < 256 { counters[value] = counter }
            return counter
        }
    }
}
