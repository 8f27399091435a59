import Foundation
import TestSupport
import XCTest

/// `courier-sim` against a real `courier-server`: provisioning through the admin API, a lossy
/// fleet judged by the oracle, and the oracle catching a server that loses or repeats.
final class SimulatorEndToEndTests: XCTestCase {
    private static var simulator: String {
        URL(fileURLWithPath: ServerProcess.binary).deletingLastPathComponent().appendingPathComponent("courier-sim").path
    }

    private struct Run: Sendable {
        var status: Int32
        var table: String
        // The report's JSON, read only.
        nonisolated(unsafe) var report: [String: Any]
        var verdict: [String: Any] { report["verdict"] as? [String: Any] ?? [:] }
        func count(_ key: String) -> Int { (report[key] as? NSNumber)?.intValue ?? -1 }
        func verdictCount(_ key: String) -> Int { (verdict[key] as? NSNumber)?.intValue ?? -1 }
    }

    private static func simulate(_ server: ServerProcess, _ arguments: [String], timeout: Double = 240) async throws -> Run {
        let json = "\(server.dataDirectory)/report-\(UUID().uuidString).json"
        let output = try await ExternalProgram.run(Self.simulator, [
            "run", "--server", "127.0.0.1:\(server.coapPort)", "--push-port", "\(server.pushPort)",
            "--admin", "http://127.0.0.1:\(server.httpPort)", "--admin-token-file", "\(server.dataDirectory)/admin.token",
            "--json", json, "--quiet",
        ] + arguments, timeout: timeout)
        let document = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json)))) as? [String: Any]
        guard let report = document?["report"] as? [String: Any] else {
            throw ServerTestError("courier-sim exited \(output.status) without a report:\n\(output.text)\n\(output.stderr.suffix(2000))")
        }
        return Run(status: output.status, table: output.text, report: report)
    }

    func testALossyFleetWithDroppedSessionsLosesNothing() async throws {
        try await withServer { server in
            // 200 devices: 100 users with 2 devices each, in chats of 4 users (8 devices).
            let run = try await Self.simulate(server, [
                "--users", "100", "--devices-per-user", "2", "--members", "4", "--rate", "0.5", "--duration", "10",
                "--ramp-up", "2", "--drop", "10", "--duplicate", "10", "--disconnect", "20", "--seed", "20261130",
                "--drain-timeout", "90", "--settle-timeout", "90",
            ])
            XCTAssertEqual(run.status, 0, run.table)
            XCTAssertEqual(run.verdictCount("lost"), 0, run.table)
            XCTAssertEqual(run.verdictCount("duplicates"), 0, run.table)
            XCTAssertEqual(run.verdictCount("order_violations"), 0, run.table)
            XCTAssertGreaterThan(run.verdictCount("acknowledged"), 300, "about 1,000 messages are due in 10 s\n\(run.table)")
            XCTAssertEqual(run.verdictCount("delivered"), run.verdictCount("expected_deliveries"))
            XCTAssertEqual(run.verdictCount("expected_deliveries"), run.verdictCount("acknowledged") * 8, "each message reaches 8 devices")
            XCTAssertGreaterThan(run.count("datagrams_dropped"), 50, run.table)
            XCTAssertGreaterThan(run.count("datagrams_duplicated"), 50, run.table)
            XCTAssertGreaterThan(run.count("retransmissions"), 20, run.table)
            XCTAssertGreaterThan(run.count("injected_disconnects"), 10, run.table)
            XCTAssertGreaterThanOrEqual(run.count("reconnects"), run.count("injected_disconnects") / 2, run.table)
            XCTAssertTrue(run.table.contains("verdict: PASS"), run.table)
        }
    }

    /// 20 devices (10 users with 2 each, 2 chats of 5 users) for 4 s against a server started
    /// with a test fault; returns the run, the oracle's findings that start with `finding`,
    /// and the server's log.
    private func judgeFaultyServer(_ fault: [String], settleTimeout: Int, finding: String) async throws -> (run: Run, named: [String], serverLog: String) {
        var result: (Run, [String], String)?
        try await withServer(fault) { server in
            let run = try await Self.simulate(server, [
                "--users", "10", "--devices-per-user", "2", "--members", "5", "--rate", "2", "--duration", "4",
                "--ramp-up", "0", "--settle-timeout", "\(settleTimeout)", "--seed", "7",
            ])
            result = (run, (run.verdict["examples"] as? [String] ?? []).filter { $0.hasPrefix(finding) }, server.serverLog())
        }
        let (run, named, log) = try XCTUnwrap(result)
        XCTAssertEqual(run.status, 1, run.table)
        XCTAssertFalse(named.isEmpty, run.table)
        XCTAssertTrue(run.table.contains("verdict: FAIL"), run.table)
        return (run, named, log)
    }

    /// kill -9 of the server at random moments under a simulator load, restarted each time on
    /// the same ports and data directory (COURIER_SIM_KILL_CYCLES times, 3 by default): the
    /// devices retry and reconnect, and the oracle finds nothing lost, repeated or reordered.
    func testKillNineUnderLoadLosesNothing() async throws {
        let cycles = Int(ProcessInfo.processInfo.environment["COURIER_SIM_KILL_CYCLES"] ?? "") ?? 3
        var random = SplitMix64(seed: UInt64(Date().timeIntervalSince1970))
        try await withServer { server in
            async let run = Self.simulate(server, [
                "--users", "20", "--devices-per-user", "2", "--members", "4", "--rate", "2",
                "--duration", "\(cycles * 5 + 5)", "--ramp-up", "1", "--drain-timeout", "120", "--settle-timeout", "120",
            ], timeout: Double(cycles * 5 + 300))
            try await Task.sleep(for: .seconds(3))
            for _ in 0..<cycles {
                try await Task.sleep(for: .milliseconds(Int64.random(in: 1500...4500, using: &random)))
                await server.kill9()
                try await server.start()
            }
            let result = try await run
            print("kill -9 cycles \(cycles): acknowledged \(result.verdictCount("acknowledged")), lost \(result.verdictCount("lost")), duplicates \(result.verdictCount("duplicates")), order violations \(result.verdictCount("order_violations"))")
            XCTAssertEqual(result.status, 0, result.table)
            XCTAssertEqual(result.verdictCount("lost"), 0, result.table)
            XCTAssertEqual(result.verdictCount("duplicates"), 0, result.table)
            XCTAssertEqual(result.verdictCount("order_violations"), 0, result.table)
            XCTAssertGreaterThan(result.verdictCount("acknowledged"), 100, result.table)
            XCTAssertGreaterThanOrEqual(result.count("reconnects"), cycles * 20, "every device's session was cut at each kill\n\(result.table)")
        }
    }

    func testTheOracleNamesMessagesAServerDropsAfterAcknowledging() async throws {
        let (run, named, serverLog) = try await judgeFaultyServer(["--test-drop-every", "7"], settleTimeout: 5, finding: "lost: message ")
        XCTAssertGreaterThan(run.verdictCount("lost"), 0, run.table)
        XCTAssertEqual(run.verdictCount("duplicates"), 0, run.table)
        // Each dropped message is missing at all 10 devices of its chat.
        XCTAssertEqual(run.verdictCount("lost") % 10, 0, run.table)
        // The table names them too (a long line may be wrapped, so look for the id), and the
        // server's log names the same message as the one it left out.
        let id = try XCTUnwrap(named.first?.split(separator: " ").dropFirst(2).first)
        XCTAssertTrue(run.table.contains("lost: message \(id)"), run.table)
        XCTAssertTrue(serverLog.contains(id), "server log should name \(id)")
    }

    func testTheOracleNamesMessagesAServerPushesTwice() async throws {
        let (run, named, serverLog) = try await judgeFaultyServer(["--test-duplicate-every", "7"], settleTimeout: 20, finding: "duplicate: message ")
        XCTAssertEqual(run.verdictCount("lost"), 0, run.table)
        XCTAssertGreaterThan(run.verdictCount("duplicates"), 0, run.table)
        let id = try XCTUnwrap(named.first?.split(separator: " ").dropFirst(2).first)
        XCTAssertTrue(serverLog.contains(id), "server log should name \(id)")
    }

    func testARunWithNothingAcknowledgedProvesNothing() async throws {
        try await withServer { server in
            // Provisioned through the real admin API, but sending to a port nobody serves.
            let silentPort = try await freeUDPPort()
            let output = try await ExternalProgram.run(Self.simulator, [
                "run", "--server", "127.0.0.1:\(silentPort)", "--push-port", "\(server.pushPort)",
                "--admin", "http://127.0.0.1:\(server.httpPort)", "--admin-token-file", "\(server.dataDirectory)/admin.token",
                "--users", "4", "--members", "2", "--rate", "5", "--duration", "1", "--ramp-up", "0",
                "--drain-timeout", "1", "--settle-timeout", "1", "--quiet",
            ], timeout: 60)
            XCTAssertEqual(output.status, 2, output.text + output.stderr)
            XCTAssertTrue(output.stderr.contains("proves nothing"), output.stderr)
            XCTAssertTrue(output.text.contains("unacknowledged at end"), output.text)
        }
    }

    func testBadSettingsAreRefusedBeforeAnythingIsProvisioned() async throws {
        try await withServer { server in
            let badToken = try await ExternalProgram.run(Self.simulator, [
                "run", "--server", "127.0.0.1:\(server.coapPort)", "--admin", "http://127.0.0.1:\(server.httpPort)",
                "--admin-token", "forged", "--users", "3", "--members", "2", "--duration", "1", "--quiet",
            ])
            XCTAssertEqual(badToken.status, 2, badToken.stderr)
            XCTAssertTrue(badToken.stderr.contains("401"), badToken.stderr)
            let badRate = try await ExternalProgram.run(Self.simulator, ["run", "--rate", "0", "--admin-token", "x"])
            XCTAssertNotEqual(badRate.status, 0)
            XCTAssertTrue(badRate.stderr.contains("--rate"), badRate.stderr)
            let users = try await server.admin(["user", "list"])
            XCTAssertEqual((users["users"] as? [Any])?.count, 0, "nothing was provisioned")
        }
    }
}
