import Foundation

extension ReportRendering {
    /// One self-contained HTML5 page for people: the verdict and key figures, the settings, the
    /// latency and throughput tables, three inline SVG charts (throughput and connected devices
    /// over time, p99 latency over time, the latency distribution on a percentile scale), answers,
    /// failures and the oracle's examples. Nothing is loaded from anywhere: no scripts, no
    /// stylesheets, fonts or images, no URLs; every string from the report is escaped.
    public static func html(_ report: SimulationReport) -> String {
        let verdict = report.verdict
        let outcome = verdict.passed ? "pass" : "fail"
        var page = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>courier-sim \(verdict.passed ? "PASS" : "FAIL") · \(escaped(printable(report.settings.server)))</title>
            <style>\(stylesheet)</style>
            </head>
            <body>
            <main>
            <header class="\(outcome)">
            <h1><span class="badge">\(verdict.passed ? "PASS" : "FAIL")</span> courier-sim report</h1>
            <p class="run">\(runFacts(report).map { escaped("\($0.label) \($0.value)") }.joined(separator: " · "))</p>
            <div class="figures">\(keyFigures(report))</div>
            </header>
            <section>
            <h2>Settings</h2>
            \(definitions(settingsFacts(report.settings)))
            </section>
            <section>
            <h2>Throughput</h2>
            \(htmlTable(["", "per second", "total"], throughputRows(report)))
            <figure>\(throughputChart(report.timeline).svg())<figcaption>Acknowledged and delivered messages per second, and devices with an open push session (dashed, right axis).</figcaption></figure>
            </section>
            <section>
            <h2>Latency (ms)</h2>
            \(htmlTable([""] + latencyColumns, latencyRows(report)))
            <figure>\(latencyChart(report.timeline).svg())<figcaption>p99 of the latencies recorded in each second (gaps: none recorded).</figcaption></figure>
            <figure>\(distributionChart(report).svg())<figcaption>Latency by percentile; each step right adds a nine.</figcaption></figure>
            </section>
            <section class="columns">
            <div><h2>CoAP answers</h2>\(htmlTable(["code", "count"], responseCodes(report).map(row)))</div>
            <div><h2>Transport failures</h2>\(htmlTable(["reason", "count"], transportFailures(report).map(row)))</div>
            <div><h2>Network</h2>\(definitions(networkFacts(report)))</div>
            </section>
            <section>
            <h2>Verdict</h2>
            <p class="verdict \(outcome)">verdict: \(escaped(verdictSummary(verdict)))</p>
            \(definitions(oracleFacts(verdict)))

            """
        let examples = examples(verdict)
        if !examples.isEmpty {
            page += "<h3>Examples</h3>\n<ol class=\"examples\">\n"
            page += examples.map { "<li>\(escaped($0))</li>\n" }.joined()
            page += "</ol>\n"
        }
        if verdict.examples.count > exampleLimit {
            page += "<p>… and \(verdict.examples.count - exampleLimit) more.</p>\n"
        }
        return page + "</section>\n</main>\n</body>\n</html>\n"
    }

    /// The text of a report as HTML text or attribute value.
    static func escaped(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.append(character)
            }
        }
        return result
    }

    private static func keyFigures(_ report: SimulationReport) -> String {
        let verdict = report.verdict
        let figures: [(label: String, value: String, bad: Bool)] = [
            ("devices", "\(report.settings.devices)", false),
            ("acknowledged/s", figure(report.acknowledgedPerSecond), false),
            ("delivered/s", figure(report.deliveredPerSecond), false),
            ("send→ack p99 (ms)", latencyCell(report.sendToAck, \.p99), false),
            ("send→delivery p99 (ms)", latencyCell(report.sendToDelivery, \.p99), false),
            ("lost", "\(verdict.lost)", verdict.lost > 0),
            ("duplicates", "\(verdict.duplicates)", verdict.duplicates > 0),
            ("order violations", "\(verdict.orderViolations)", verdict.orderViolations > 0),
        ]
        return figures.map { figure in
            #"<div class="figure\#(figure.bad ? " bad" : "")"><b>\#(escaped(figure.value))</b><span>\#(escaped(figure.label))</span></div>"#
        }.joined()
    }

    private static func latencyCell(_ latency: SimulationReport.Latency, _ value: KeyPath<SimulationReport.Latency, Double>) -> String {
        latency.count == 0 ? "-" : figure(latency[keyPath: value])
    }

    private static func row(_ fact: Fact) -> Row {
        Row(name: fact.label, cells: [fact.value])
    }

    private static func definitions(_ facts: [Fact]) -> String {
        let items = facts.map { "<dt>\(escaped($0.label))</dt><dd>\(escaped($0.value))</dd>" }
        return "<dl>" + items.joined() + "</dl>"
    }

    private static func htmlTable(_ header: [String], _ rows: [Row]) -> String {
        guard !rows.isEmpty else { return "<p class=\"none\">none</p>" }
        let head = header.map { "<th>\(escaped($0))</th>" }.joined()
        let body = rows.map { row in
            "<tr><th>\(escaped(row.name))</th>" + row.cells.map { "<td>\(escaped($0))</td>" }.joined() + "</tr>"
        }
        return "<table><thead><tr>\(head)</tr></thead><tbody>\(body.joined(separator: "\n"))</tbody></table>"
    }

    // MARK: Charts

    private static let acknowledgedColor = "#2563eb"
    private static let deliveredColor = "#d97706"
    private static let connectedColor = "#6b7280"

    private static func timeAxis(_ timeline: [SimulationReport.Second]) -> LineChart.Axis {
        let elapsed = timeline.map(\.elapsed).filter(\.isFinite)
        return LineChart.linearAxis("elapsed (s)", from: min(0, elapsed.min() ?? 0), to: elapsed.max() ?? 0)
    }

    private static func timeSeries(
        _ name: String, _ color: String, _ timeline: [SimulationReport.Second], _ value: (SimulationReport.Second) -> Double
    ) -> LineChart.Series {
        LineChart.Series(name: name, color: color, points: timeline.map { LineChart.Point(x: $0.elapsed, y: value($0)) })
    }

    private static func throughputChart(_ timeline: [SimulationReport.Second]) -> LineChart {
        var connected = timeSeries("connected devices", connectedColor, timeline) { Double($0.connected) }
        connected.dashed = true
        connected.onRightAxis = true
        return LineChart(
            title: "Throughput over time", x: timeAxis(timeline), leftTitle: "messages/s", rightTitle: "devices",
            series: [
                timeSeries("acknowledged/s", acknowledgedColor, timeline, \.acknowledgedPerSecond),
                timeSeries("delivered/s", deliveredColor, timeline, \.deliveredPerSecond),
                connected,
            ]
        )
    }

    /// A second's p99 is 0 when nothing was recorded in it; that is a gap, not a fast second.
    private static func latencyChart(_ timeline: [SimulationReport.Second]) -> LineChart {
        LineChart(
            title: "p99 latency over time", x: timeAxis(timeline), leftTitle: "ms",
            series: [
                timeSeries("send→ack p99", acknowledgedColor, timeline) { $0.ackP99 > 0 ? $0.ackP99 : .nan },
                timeSeries("send→delivery p99", deliveredColor, timeline) { $0.deliveryP99 > 0 ? $0.deliveryP99 : .nan },
            ]
        )
    }

    /// HdrHistogram's percentile plot: x = -log10(1 - p/100), so 90%, 99%, 99.9%, ... are evenly
    /// spaced, from 99.99% at least to 99.9999% at most. The 100th percentile, at infinity on
    /// this scale, is drawn at the right edge.
    private static func distributionChart(_ report: SimulationReport) -> LineChart {
        func nines(_ percentile: Double) -> Double { -log10(1 - percentile / 100) }
        let distributions = [report.sendToAck.distribution, report.sendToDelivery.distribution]
        let reached = distributions.joined().map(\.percentile).filter { $0 < 100 }.map(nines).max() ?? 0
        let end = min(max(4, reached.rounded(.up)), 6)
        func series(_ name: String, _ color: String, _ distribution: [SimulationReport.Latency.Point]) -> LineChart.Series {
            let points = distribution.map { point in
                let x = point.percentile < 100 ? min(max(nines(point.percentile), 0), end) : end
                return LineChart.Point(x: point.percentile.isNaN ? .nan : x, y: point.milliseconds)
            }
            return LineChart.Series(name: name, color: color, points: points)
        }
        let ticks = (0...Int(end)).map { LineChart.Tick(value: Double($0), label: ninesLabel($0)) }
        return LineChart(
            title: "Latency distribution", x: LineChart.Axis(title: "percentile", lower: 0, upper: end, ticks: ticks),
            leftTitle: "ms",
            series: [
                series("send→ack", acknowledgedColor, report.sendToAck.distribution),
                series("send→delivery", deliveredColor, report.sendToDelivery.distribution),
            ]
        )
    }

    /// 0 nines "0%", 1 "90%", 2 "99%", 3 "99.9%", ...
    private static func ninesLabel(_ nines: Int) -> String {
        switch nines {
        case 0: "0%"
        case 1: "90%"
        default: "99" + (nines > 2 ? "." + String(repeating: "9", count: nines - 2) : "") + "%"
        }
    }

    private static let stylesheet = """

        :root { --pass: #15803d; --fail: #b91c1c; --line: #e5e7eb; --muted: #6b7280; }
        * { box-sizing: border-box; }
        body { margin: 0; background: #f3f4f6; color: #111827;
          font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
        main { max-width: 960px; margin: 0 auto; padding: 24px 16px 48px; }
        header, section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px; margin-bottom: 16px; }
        header { border-left: 8px solid var(--muted); }
        header.pass { border-left-color: var(--pass); }
        header.fail { border-left-color: var(--fail); }
        h1 { font-size: 22px; margin: 0 0 4px; }
        h2 { font-size: 16px; margin: 0 0 12px; }
        h3 { font-size: 14px; margin: 16px 0 8px; }
        .badge { color: #fff; border-radius: 4px; padding: 1px 10px; margin-right: 6px; }
        .pass .badge { background: var(--pass); }
        .fail .badge { background: var(--fail); }
        .run { color: var(--muted); margin: 0 0 12px; overflow-wrap: anywhere; }
        .figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 8px; }
        .figure { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
        .figure b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
        .figure span { color: var(--muted); }
        .figure.bad b { color: var(--fail); }
        dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
        dt { color: var(--muted); }
        dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
        table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin-bottom: 12px; }
        th, td { padding: 4px 14px; border-bottom: 1px solid var(--line); text-align: right; }
        th:first-child { text-align: left; padding-left: 0; }
        thead th { color: var(--muted); font-weight: 600; }
        tbody th { font-weight: normal; }
        .none { color: var(--muted); }
        .columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 16px; }
        figure { margin: 16px 0 0; }
        figcaption { color: var(--muted); font-size: 12px; }
        svg { display: block; width: 100%; max-width: 900px; height: auto; }
        svg text { font-size: 12px; fill: #374151; }
        svg .grid line { stroke: var(--line); }
        svg .axis rect, svg rect.empty { fill: none; stroke: #9ca3af; }
        .verdict { font-size: 18px; font-weight: 700; }
        .verdict.pass { color: var(--pass); }
        .verdict.fail { color: var(--fail); }
        .examples { font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
          overflow-wrap: anywhere; padding-left: 28px; }

        """
}
