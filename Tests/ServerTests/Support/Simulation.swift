import Foundation
import TestSupport

/// One finished `courier-sim run`: its exit status, its printed table and its JSON report.
struct SimulatorRun: Sendable {
    var status: Int32
    var table: String
    // The report's JSON, read only.
    nonisolated(unsafe) var report: [String: Any]
    var verdict: [String: Any] { report["verdict"] as? [String: Any] ?? [:] }
    func count(_ key: String) -> Int { (report[key] as? NSNumber)?.intValue ?? -1 }
    func verdictCount(_ key: String) -> Int { (verdict[key] as? NSNumber)?.intValue ?? -1 }
    /// A latency percentile of the report (`series` is "send_to_ack" or "send_to_delivery"), in ms.
    func latency(_ series: String, _ percentile: String) -> Double? {
        ((report[series] as? [String: Any])?[percentile] as? NSNumber)?.doubleValue
    }
    /// How many answers carried `code` ("2.01", "5.03", "4.29").
    func answers(_ code: String) -> Int {
        ((report["response_codes"] as? [String: Any])?[code] as? NSNumber)?.intValue ?? 0
    }
    /// "acknowledged N, lost L, duplicates D, order violations O".
    var verdictSummary: String {
        "acknowledged \(verdictCount("acknowledged")), lost \(verdictCount("lost")), duplicates \(verdictCount("duplicates")), order violations \(verdictCount("order_violations")), delivered \(verdictCount("delivered")) of \(verdictCount("expected_deliveries")), simulator exit \(status)"
            + (failureExamples.isEmpty ? "" : "; e.g. " + failureExamples.joined(separator: "; "))
    }

    /// The oracle's first examples when it found something: what the one-line summary of a
    /// failed CI run must carry to be understood without the full report.
    var failureExamples: [String] {
        guard verdictCount("lost") > 0 || verdictCount("duplicates") > 0 || verdictCount("order_violations") > 0 else { return [] }
        return ((verdict["examples"] as? [String]) ?? []).prefix(3).map { String($0.prefix(200)) }
    }
}

enum Simulator {
    static var binary: String {
        URL(fileURLWithPath: ServerProcess.binary).deletingLastPathComponent().appendingPathComponent("courier-sim").path
    }

    /// Runs `courier-sim run` against `server` (or its gateway at `gateway`, e.g. a fault proxy)
    /// and reads the JSON report it writes.
    static func run(_ server: ServerProcess, _ arguments: [String], gateway: String? = nil, timeout: Double = 240) async throws -> SimulatorRun {
        try await run(
            server: gateway ?? "127.0.0.1:\(server.coapPort)", pushPort: server.pushPort, admin: "http://127.0.0.1:\(server.httpPort)",
            dataDirectory: server.dataDirectory, arguments, timeout: timeout
        )
    }

    /// Runs `courier-sim run` across the nodes of a cluster (provisioning through the first).
    static func run(cluster nodes: [ServerProcess], _ arguments: [String], timeout: Double = 240) async throws -> SimulatorRun {
        try await run(
            server: "127.0.0.1:\(nodes[0].coapPort)", pushPort: nodes[0].pushPort, admin: "http://127.0.0.1:\(nodes[0].httpPort)",
            dataDirectory: nodes[0].dataDirectory,
            nodes.dropFirst().flatMap { ["--server", "127.0.0.1:\($0.coapPort)", "--push-port", "\($0.pushPort)"] } + arguments, timeout: timeout
        )
    }

    /// Runs `courier-sim run` against the server at those addresses, through `launch` (which
    /// may wrap the command, e.g. in `ip netns exec`), and reads the JSON report it writes.
    static func run(
        server: String, pushPort: Int, admin: String, dataDirectory: String, _ arguments: [String], timeout: Double,
        launch: ([String]) -> (String, [String]) = { ($0[0], Array($0.dropFirst())) }
    ) async throws -> SimulatorRun {
        let json = "\(dataDirectory)/report-\(UUID().uuidString).json"
        let (executable, full) = launch([
            binary, "run", "--server", server, "--push-port", "\(pushPort)",
            "--admin", admin, "--admin-token-file", "\(dataDirectory)/admin.token", "--json", json, "--quiet",
        ] + arguments)
        let output = try await ExternalProgram.run(executable, full, timeout: timeout)
        let document = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json)))) as? [String: Any]
        guard let report = document?["report"] as? [String: Any] else {
            throw ServerTestError("courier-sim exited \(output.status) without a report:\n\(output.text)\n\(output.stderr.suffix(2000))")
        }
        return SimulatorRun(status: output.status, table: output.text, report: report)
    }
}
