import Foundation

/// Renders a `SimulationReport` for its readers: `table` for the terminal, `json` and
/// `decodeJSON` for tools, `html` for people.
///
/// The three renderers share what they say (the facts below) and differ only in layout, so the
/// terminal and the page never disagree about a figure.
public enum ReportRendering {}

extension ReportRendering {
    /// A label and its value, as both the table and the page show them.
    struct Fact {
        var label: String
        var value: String

        init(_ label: String, _ value: String) {
            self.label = label
            self.value = value
        }
    }

    /// A row of the latency table: a name and one cell per `latencyColumns` entry.
    struct Row {
        var name: String
        var cells: [String]
    }

    // MARK: What the report says

    static let latencyColumns = ["count", "p50", "p90", "p99", "p99.9", "max"]

    static func latencyRows(_ report: SimulationReport) -> [Row] {
        [
            Row(name: "send→ack", cells: latencyCells(report.sendToAck)),
            Row(name: "send→delivery", cells: latencyCells(report.sendToDelivery)),
        ]
    }

    /// An empty distribution has no percentiles, rather than percentiles of zero.
    private static func latencyCells(_ latency: SimulationReport.Latency) -> [String] {
        let percentiles = [latency.p50, latency.p90, latency.p99, latency.p999, latency.max]
        return ["\(latency.count)"] + percentiles.map { latency.count == 0 ? "-" : figure($0) }
    }

    static let throughputColumns = ["per second", "total"]

    static func throughputRows(_ report: SimulationReport) -> [Row] {
        let sentPerSecond = report.sendingSeconds > 0 ? Double(report.sent) / report.sendingSeconds : .nan
        return [
            Row(name: "sent", cells: [figure(sentPerSecond), "\(report.sent)"]),
            Row(name: "acknowledged", cells: [figure(report.acknowledgedPerSecond), "\(report.acknowledged)"]),
            Row(name: "delivered", cells: [figure(report.deliveredPerSecond), "\(report.delivered)"]),
        ]
    }

    /// The run itself: where, when and for how long.
    static func runFacts(_ report: SimulationReport) -> [Fact] {
        [
            Fact("server", printable(report.settings.server)),
            Fact("started", report.startedAt.formatted(timestampStyle)),
            Fact("sending", "\(compact(report.sendingSeconds)) s"),
            Fact("settling", "\(compact(report.settleSeconds)) s"),
        ] + (report.changesSent.map { [Fact("changes sent", "\($0) edits and deletes")] } ?? [])
    }

    static func settingsFacts(_ settings: SimulationReport.Settings) -> [Fact] {
        let cap = settings.totalRate.map { "total cap \(compact($0))/s" } ?? "no total cap"
        var facts = [
            Fact("devices", "\(settings.devices) = \(settings.users) users × \(settings.devicesPerUser)/user"),
            Fact("chats", "\(settings.chats) × \(settings.membersPerChat) members"),
            Fact("rate", "\(compact(settings.ratePerDevice))/s per device, \(cap)"),
            Fact("message", "\(settings.messageBytes) B"),
        ]
        if let duration = settings.durationSeconds {
            facts.append(Fact("duration", "\(compact(duration)) s"))
        }
        if let count = settings.messageCount {
            facts.append(Fact("count", "\(count) messages"))
        }
        if settings.durationSeconds == nil, settings.messageCount == nil {
            facts.append(Fact("duration", "until stopped"))
        }
        facts.append(Fact("ramp-up", "\(compact(settings.rampUpSeconds)) s"))
        if let warmup = settings.warmupSeconds { facts.append(Fact("untimed warm-up", "\(compact(warmup)) s")) }
        if let senders = settings.sendersPerChat { facts.append(Fact("senders per chat", "\(senders)")) }
        if let changes = settings.changePercent { facts.append(Fact("changes", "\(compact(changes))% of sends edit or delete an own message")) }
        if settings.dtls == true { facts.append(Fact("transport", "CoAP over DTLS 1.2, a pre-shared key per device")) }
        facts.append(Fact("window", "\(settings.window)"))
        if !settings.faults.isEmpty {
            facts.append(Fact("faults", faultsDescription(settings.faults)))
        }
        facts.append(Fact("seed", "\(settings.seed)"))
        return facts
    }

    private static func faultsDescription(_ faults: SimulationReport.Faults) -> String {
        let shares = [
            ("drop out", faults.dropOutgoing, "%"),
            ("drop in", faults.dropIncoming, "%"),
            ("duplicate out", faults.duplicateOutgoing, "%"),
            ("duplicate in", faults.duplicateIncoming, "%"),
            ("disconnect", faults.disconnectSessions, "% of devices"),
        ]
        return shares.filter { $0.1 != 0 }.map { "\($0.0) \(compact($0.1))\($0.2)" }.joined(separator: ", ")
    }

    /// Answers by CoAP code, in code order.
    static func responseCodes(_ report: SimulationReport) -> [Fact] {
        report.responseCodes.sorted { $0.key < $1.key }.map { Fact(printable($0.key), "\($0.value)") }
    }

    /// Failed exchanges by reason, the most frequent first.
    static func transportFailures(_ report: SimulationReport) -> [Fact] {
        report.transportFailures
            .sorted { ($0.value, $1.key) > ($1.value, $0.key) }
            .map { Fact(printable($0.key), "\($0.value)") }
    }

    static func networkFacts(_ report: SimulationReport) -> [Fact] {
        [
            Fact("retransmissions", "\(report.retransmissions)"),
            Fact("reconnects", "\(report.reconnects)"),
            Fact("injected disconnects", "\(report.injectedDisconnects)"),
            Fact("datagrams dropped", "\(report.datagramsDropped)"),
            Fact("datagrams duplicated", "\(report.datagramsDuplicated)"),
            Fact("peak connected", "\(report.peakConnected)"),
        ] + (report.dtlsHandshakes.map { [Fact("dtls handshakes", "\($0)"), Fact("dtls handshake failures", "\(report.dtlsHandshakeFailures ?? 0)")] } ?? [])
    }

    /// What arrived first, then what went wrong (the table's second column).
    static func oracleFacts(_ verdict: SimulationReport.Verdict) -> [Fact] {
        [
            Fact("acknowledged", "\(verdict.acknowledged)"),
            Fact("expected deliveries", "\(verdict.expectedDeliveries)"),
            Fact("delivered", "\(verdict.delivered)"),
            Fact("unacknowledged at end", "\(verdict.unacknowledged)"),
            Fact("lost", "\(verdict.lost)"),
            Fact("duplicates", "\(verdict.duplicates)"),
            Fact("order violations", "\(verdict.orderViolations)"),
        ]
    }

    /// `PASS`, or `FAIL (lost N, duplicates N, order violations N)`.
    static func verdictSummary(_ verdict: SimulationReport.Verdict) -> String {
        if verdict.passed { return "PASS" }
        return "FAIL (lost \(verdict.lost), duplicates \(verdict.duplicates), order violations \(verdict.orderViolations))"
    }

    /// The model keeps at most 50 examples; a report built elsewhere may not.
    static let exampleLimit = 50

    static func examples(_ verdict: SimulationReport.Verdict) -> [String] {
        verdict.examples.prefix(exampleLimit).map(printable)
    }

    // MARK: Numbers and text

    /// A measured value with the precision it deserves: 2 decimals under 10, 1 under 100, none
    /// above; `-` when there is no value.
    static func figure(_ value: Double) -> String {
        guard value.isFinite else { return "-" }
        // Decided on the rounded value, so 9.999 reads "10.0" and not "10.00".
        if abs((value * 100).rounded() / 100) < 10 { return String(format: "%.2f", value) }
        if abs((value * 10).rounded() / 10) < 100 { return String(format: "%.1f", value) }
        return String(format: "%.0f", value)
    }

    /// A setting as a person would write it: up to three decimals, no trailing zeros.
    static func compact(_ value: Double, decimals: Int = 3) -> String {
        guard value.isFinite else { return "-" }
        var text = String(format: "%.\(decimals)f", value)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text == "-0" ? "0" : text
    }

    static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: false)

    /// A report's own text on one line: tabs and line breaks become spaces, other control
    /// characters (a terminal's escape sequences among them) the replacement character.
    static func printable(_ text: String) -> String {
        var result = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\t", "\n", "\r": result.append(" ")
            case _ where scalar.properties.generalCategory == .control: result.append("\u{FFFD}")
            default: result.append(scalar)
            }
        }
        return String(result)
    }
}
