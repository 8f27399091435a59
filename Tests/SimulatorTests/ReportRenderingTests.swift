import CourierSimulator
import Foundation
import XCTest

final class ReportRenderingTests: XCTestCase {
    // MARK: Table

    func testTableFormatsEveryPercentileWithItsPrecision() {
        let lines = ReportRendering.table(sampleReport()).split(separator: "\n")
        let ack = lines.first { $0.hasPrefix("  send→ack ") }.map { $0.split(separator: " ") }
        let delivery = lines.first { $0.hasPrefix("  send→delivery ") }.map { $0.split(separator: " ") }
        // count, p50, p90, p99, p99.9, max: 2 decimals under 10 ms, 1 under 100, none above.
        XCTAssertEqual(ack, ["send→ack", "12034", "1.23", "4.50", "12.3", "123", "457"])
        XCTAssertEqual(delivery, ["send→delivery", "36100", "2.10", "9.99", "25.6", "210", "980"])
        let header = lines.first { $0.hasPrefix("latency (ms)") }.map { $0.split(separator: " ") }
        XCTAssertEqual(header, ["latency", "(ms)", "count", "p50", "p90", "p99", "p99.9", "max"])
    }

    func testTableRoundsToTheNextPrecisionAtTheBoundary() {
        var report = sampleReport()
        report.sendToAck.p50 = 9.999
        report.sendToAck.p90 = 99.96
        let ack = ReportRendering.table(report).split(separator: "\n").first { $0.hasPrefix("  send→ack ") }
        XCTAssertEqual(ack?.split(separator: " ").dropFirst(2).prefix(2), ["10.0", "100"])
    }

    func testFailingTableEndsWithTheVerdictAndTheExamples() {
        let table = ReportRendering.table(sampleReport())
        let lines = table.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let verdict = lines.firstIndex(of: "verdict: FAIL (lost 2, duplicates 1, order violations 0)")
        XCTAssertNotNil(verdict)
        XCTAssertEqual(lines[(verdict ?? 0) + 1], "  lost: message 41 at device 7")
        XCTAssertEqual(lines[(verdict ?? 0) + 2], "  lost: message 42 at device 7")
        XCTAssertEqual(lines[(verdict ?? 0) + 3], "  duplicate: message 43 at device 9")
        XCTAssertFalse(table.contains("PASS"))
        XCTAssertTrue(table.contains("CoAP answers        2.01 12034   4.04 1   5.03 12"), table)
        XCTAssertTrue(table.contains("transport failures  timedOut"), table)
    }

    func testPassingTableSaysPass() {
        let table = ReportRendering.table(sampleReport(passing: true))
        XCTAssertTrue(table.contains("\nverdict: PASS\n"), table)
        XCTAssertFalse(table.contains("FAIL"))
    }

    func testTableShowsTheSettings() {
        let table = ReportRendering.table(sampleReport())
        for expected in [
            "devices 200 = 100 users × 2/user", "chats 50 × 4 members", "rate 2/s per device, total cap 300/s",
            "message 64 B", "duration 60 s", "ramp-up 5 s", "window 4", "faults drop out 1%, disconnect 10% of devices", "seed 42",
        ] {
            XCTAssertTrue(table.contains(expected), "missing \(expected) in\n\(table)")
        }
        XCTAssertFalse(table.contains("duplicate in"), "faults that are zero are not listed")
    }

    func testNoTableLineIsWiderThanAHundredColumnsOrCarriesControlCharacters() {
        var report = sampleReport()
        report.settings.server = String(repeating: "courier.example ", count: 12) + "\u{1B}[31m"
        report.verdict.examples.append("lost: " + String(repeating: "message-with-a-long-id ", count: 8))
        report.transportFailures["a reason that goes on\nfor a second line"] = 1
        let table = ReportRendering.table(report)
        for line in table.split(separator: "\n") {
            XCTAssertLessThanOrEqual(line.count, 100, String(line))
        }
        XCTAssertFalse(table.unicodeScalars.contains { $0 != "\n" && $0.properties.generalCategory == .control })
        XCTAssertTrue(table.contains("message-with-a-long-id"))
    }

    func testTableOfAnEmptyRunSaysNoneRatherThanZeroLatencies() {
        let table = ReportRendering.table(emptyReport())
        let ack = table.split(separator: "\n").first { $0.hasPrefix("  send→ack ") }
        XCTAssertEqual(ack?.split(separator: " "), ["send→ack", "0", "-", "-", "-", "-", "-"])
        XCTAssertTrue(table.contains("CoAP answers        none"), table)
        XCTAssertTrue(table.contains("\nverdict: PASS\n"))
    }

    // MARK: JSON

    func testJSONRoundTripsAndSaysWhetherTheRunPassed() throws {
        let report = sampleReport()
        let data = try ReportRendering.json(report)
        XCTAssertEqual(try ReportRendering.decodeJSON(data), report)
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertTrue(text.contains(#""passed" : false"#), text)
        XCTAssertTrue(text.contains(#""send_to_delivery" : {"#))
        XCTAssertTrue(text.contains(#""order_violations" : 0"#))
        XCTAssertTrue(text.contains(#""started_at" : "2024-06-01T12:00:00.000Z""#), text)
        // Failure reasons are data: their spelling survives the snake_case keys.
        XCTAssertTrue(text.contains(#""timedOut" : 3"#))
        XCTAssertTrue(text.contains(#""no_route" : 1"#))

        let passing = String(decoding: try ReportRendering.json(sampleReport(passing: true)), as: UTF8.self)
        XCTAssertTrue(passing.contains(#""passed" : true"#))
    }

    func testJSONKeepsDatesToTheMillisecondAndNumbersThatAreNot() throws {
        var report = sampleReport()
        report.startedAt = Date(timeIntervalSince1970: 1_717_243_200.25)
        report.acknowledgedPerSecond = .nan
        report.deliveredPerSecond = .infinity
        let decoded = try ReportRendering.decodeJSON(try ReportRendering.json(report))
        XCTAssertEqual(decoded.startedAt.timeIntervalSince1970, 1_717_243_200.25, accuracy: 0.001)
        XCTAssertTrue(decoded.acknowledgedPerSecond.isNaN)
        XCTAssertEqual(decoded.deliveredPerSecond, .infinity)
    }

    func testDecodingRejectsADocumentWithoutAReport() {
        XCTAssertThrowsError(try ReportRendering.decodeJSON(Data(#"{ "passed" : true }"#.utf8)))
    }

    // MARK: HTML

    func testHTMLHasThreeChartsAndNothingFromOutside() {
        let html = ReportRendering.html(sampleReport())
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        XCTAssertEqual(html.components(separatedBy: "<svg").count - 1, 3)
        XCTAssertEqual(html.components(separatedBy: "</svg>").count - 1, 3)
        assert(
            html,
            contains: [
                #"<header class="fail">"#, "verdict: FAIL (lost 2, duplicates 1, order violations 0)",
                "<th>send→ack</th><td>12034</td><td>1.23</td><td>4.50</td><td>12.3</td><td>123</td><td>457</td>",
                "<li>lost: message 41 at device 7</li>", "<th>5.03</th><td>12</td>",
            ],
            lacks: ["http://", "https://", "<script", "<link", "<img", "url(", "@import", "no data"]
        )
    }

    func testHTMLPercentileAxisCountsNines() {
        let html = ReportRendering.html(sampleReport())
        for tick in [">0%<", ">90%<", ">99%<", ">99.9%<", ">99.99%<"] {
            XCTAssertTrue(html.contains(tick), tick)
        }
        XCTAssertFalse(html.contains(">99.999%<"), "the sample reaches 99.99%, so the axis stops there")
    }

    func testPassingHTMLSaysPass() {
        let html = ReportRendering.html(sampleReport(passing: true))
        XCTAssertTrue(html.contains(#"<header class="pass">"#))
        XCTAssertTrue(html.contains("<title>courier-sim PASS"))
        XCTAssertFalse(html.contains("FAIL"))
    }

    func testHTMLEscapesTheReportsStrings() {
        var report = sampleReport()
        report.settings.server = #"<b>&"x"'"#
        report.transportFailures = [#"<i>refused</i>"#: 2]
        report.verdict.examples = [#"<script>alert("x")</script>"#]
        assert(
            ReportRendering.html(report),
            contains: [
                "&lt;b&gt;&amp;&quot;x&quot;&#39;", "&lt;i&gt;refused&lt;/i&gt;",
                "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;",
            ],
            lacks: [#"<b>&"x""#, "<i>refused", "<script"]
        )
    }

    func testHTMLNeverWritesNaNOrInfinity() {
        var report = sampleReport()
        report.acknowledgedPerSecond = .nan
        report.sendToAck.p99 = .infinity
        report.timeline[1].acknowledgedPerSecond = .nan
        report.timeline[2].deliveryP99 = .infinity
        report.timeline[3].elapsed = .nan
        report.sendToDelivery.distribution[2].milliseconds = .nan
        report.sendToDelivery.distribution.append(.init(percentile: .infinity, milliseconds: 5))
        let html = ReportRendering.html(report).lowercased()
        XCTAssertFalse(html.contains("nan"))
        XCTAssertFalse(html.contains("inf"))
        XCTAssertEqual(html.components(separatedBy: "<svg").count - 1, 3)
    }

    func testHTMLOfAnEmptyRunSaysNoData() {
        let html = ReportRendering.html(emptyReport())
        XCTAssertEqual(html.components(separatedBy: "<svg").count - 1, 3)
        XCTAssertEqual(html.components(separatedBy: ">no data<").count - 1, 3)
        XCTAssertFalse(html.lowercased().contains("nan"))
    }

    func testHTMLDrawsASingleSecondAsADot() {
        var report = sampleReport()
        report.timeline = [report.timeline[0]]
        report.sendToAck.distribution = [.init(percentile: 100, milliseconds: 3)]
        report.sendToDelivery.distribution = []
        let html = ReportRendering.html(report)
        XCTAssertFalse(html.contains("no data"))
        XCTAssertTrue(html.contains("<circle"))
        XCTAssertFalse(html.lowercased().contains("nan"))
    }

    private func assert(
        _ text: String, contains present: [String], lacks absent: [String], file: StaticString = #filePath, line: UInt = #line
    ) {
        for expected in present {
            XCTAssertTrue(text.contains(expected), "missing \(expected)", file: file, line: line)
        }
        for unexpected in absent {
            XCTAssertFalse(text.contains(unexpected), "found \(unexpected)", file: file, line: line)
        }
    }

    // MARK: Samples

    /// A failing run (2 lost, 1 duplicate) unless `passing`.
    private func sampleReport(passing: Bool = false) -> SimulationReport {
        var faults = SimulationReport.Faults()
        faults.dropOutgoing = 1
        faults.disconnectSessions = 10
        let settings = SimulationReport.Settings(
            server: "127.0.0.1:5683", users: 100, devicesPerUser: 2, chats: 50, membersPerChat: 4,
            ratePerDevice: 2, totalRate: 300, messageBytes: 64, durationSeconds: 60, messageCount: nil,
            rampUpSeconds: 5, window: 4, faults: faults, seed: 42
        )
        let percentiles = [0, 50, 90, 99, 99.9, 99.99, 100]
        let ack = SimulationReport.Latency(
            count: 12034, p50: 1.234, p90: 4.5, p99: 12.34, p999: 123.4, max: 456.7, mean: 2.2,
            distribution: zip(percentiles, [0.4, 1.234, 4.5, 12.34, 123.4, 300, 456.7]).map { .init(percentile: $0, milliseconds: $1) }
        )
        let delivery = SimulationReport.Latency(
            count: 36100, p50: 2.1, p90: 9.99, p99: 25.61, p999: 210.2, max: 980.4, mean: 3.1,
            distribution: zip(percentiles, [0.9, 2.1, 9.99, 25.61, 210.2, 700, 980.4]).map { .init(percentile: $0, milliseconds: $1) }
        )
        let timeline = (0..<5).map { second in
            SimulationReport.Second(
                elapsed: Double(second + 1), connected: min(200, 60 * (second + 1)), sent: 200 * (second + 1),
                acknowledged: 199 * (second + 1), delivered: 597 * (second + 1), inFlight: 1,
                acknowledgedPerSecond: 199, deliveredPerSecond: 597, ackP99: second == 2 ? 0 : 12, deliveryP99: 25
            )
        }
        let verdict = SimulationReport.Verdict(
            acknowledged: 12034, expectedDeliveries: 36102, delivered: passing ? 36102 : 36100, lost: passing ? 0 : 2,
            duplicates: passing ? 0 : 1, orderViolations: 0, unacknowledged: 12,
            examples: passing ? [] : ["lost: message 41 at device 7", "lost: message 42 at device 7", "duplicate: message 43 at device 9"]
        )
        return SimulationReport(
            settings: settings, startedAt: Date(timeIntervalSince1970: 1_717_243_200), sendingSeconds: 60, settleSeconds: 2.1,
            sent: 12046, acknowledged: 12034, delivered: 36101, sendToAck: ack, sendToDelivery: delivery,
            acknowledgedPerSecond: 200.6, deliveredPerSecond: 601.7, responseCodes: ["5.03": 12, "2.01": 12034, "4.04": 1],
            transportFailures: ["timedOut": 3, "no_route": 1], retransmissions: 40, reconnects: 3, injectedDisconnects: 20,
            datagramsDropped: 120, datagramsDuplicated: 0, peakConnected: 200, timeline: timeline, verdict: verdict
        )
    }

    private func emptyReport() -> SimulationReport {
        var report = sampleReport(passing: true)
        report.sent = 0
        report.acknowledged = 0
        report.delivered = 0
        report.sendToAck = .empty
        report.sendToDelivery = .empty
        report.responseCodes = [:]
        report.transportFailures = [:]
        report.timeline = []
        return report
    }
}
