import Foundation
import TestSupport
import XCTest

/// `courier-sim` against a real `courier-server`: provisioning through the admin API, a lossy
/// fleet judged by the oracle, and the oracle catching a server that loses or repeats.
final class SimulatorEndToEndTests: XCTestCase {
    private typealias Run = SimulatorRun

    private static func simulate(_ server: ServerProcess, _ arguments: [String], timeout: Double = 240) async throws -> Run {
        try await Simulator.run(server, arguments, timeout: timeout)
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

    /// Edits and deletes are entries of a chat's order like messages: a fleet that mixes them
    /// in is judged by the same oracle, and the server carries them out.
    func testAFleetWithEditsAndDeletesMixedInPassesItsOracle() async throws {
        try await withServer { server in
            let run = try await Self.simulate(server, [
                "--users", "40", "--devices-per-user", "2", "--members", "4", "--rate", "2", "--duration", "6",
                "--ramp-up", "1", "--changes", "30", "--seed", "20261205", "--prefix", "edits",
            ])
            XCTAssertEqual(run.status, 0, run.table)
            XCTAssertTrue(run.table.contains("verdict: PASS"), run.verdictSummary)
            XCTAssertGreaterThan(run.count("changes_sent"), 30, "about 30% of some 900 sends, once each device's first message is back\n\(run.table)")
            XCTAssertEqual(run.answers("4.03"), 0, "a device only changes its own messages")
            XCTAssertEqual(run.answers("4.04"), 0, "and only messages the chat holds")
            var changes = 0, deleted = 0, edited = 0
            for chat in (try await server.admin(["chat", "list"])["chats"] as! [[String: Any]]) {
                let history = try await server.admin(["chat", "history", "\(chat["id"]!)", "--limit", "100000"])["messages"] as! [[String: Any]]
                changes += history.count { $0["change"] != nil }
                deleted += history.count { $0["deleted"] as? Bool == true }
                edited += history.count { $0["edited_at_ms"] != nil && $0["deleted"] == nil }
            }
            XCTAssertEqual(changes, run.count("changes_sent"), "every change acknowledged is stored once")
            XCTAssertGreaterThan(deleted, 0)
            XCTAssertGreaterThan(edited, 0)
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
            let output = try await ExternalProgram.run(Simulator.binary, [
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
            let badToken = try await ExternalProgram.run(Simulator.binary, [
                "run", "--server", "127.0.0.1:\(server.coapPort)", "--admin", "http://127.0.0.1:\(server.httpPort)",
                "--admin-token", "forged", "--users", "3", "--members", "2", "--duration", "1", "--quiet",
            ])
            XCTAssertEqual(badToken.status, 2, badToken.stderr)
            XCTAssertTrue(badToken.stderr.contains("401"), badToken.stderr)
            let badRate = try await ExternalProgram.run(Simulator.binary, ["run", "--rate", "0", "--admin-token", "x"])
            XCTAssertNotEqual(badRate.status, 0)
            XCTAssertTrue(badRate.stderr.contains("--rate"), badRate.stderr)
            let users = try await server.admin(["user", "list"])
            XCTAssertEqual((users["users"] as? [Any])?.count, 0, "nothing was provisioned")
        }
    }
}
