import Foundation
import TestSupport
import XCTest

/// The server dies or stops under a simulator load — `kill -9` at random moments, a kill between
/// storing a batch and committing its offset, a SIGSTOP longer than the devices' timeouts — and
/// the simulator's oracle finds nothing acknowledged lost, repeated or reordered.
final class CrashReliabilityTests: ReliabilityTestCase {
    /// A fleet of 40 devices (20 users with 2 each, chats of 4 users) sending for `seconds`.
    private func fleet(seconds: Int, rate: Double = 2) -> [String] {
        [
            "--users", "20", "--devices-per-user", "2", "--members", "4", "--rate", "\(rate)",
            "--duration", "\(seconds)", "--ramp-up", "1", "--drain-timeout", "150", "--settle-timeout", "150",
        ]
    }

    private func assertNothingLost(_ run: SimulatorRun, atLeast acknowledged: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.status, 0, run.table, file: file, line: line)
        XCTAssertEqual(run.verdictCount("lost"), 0, run.table, file: file, line: line)
        XCTAssertEqual(run.verdictCount("duplicates"), 0, run.table, file: file, line: line)
        XCTAssertEqual(run.verdictCount("order_violations"), 0, run.table, file: file, line: line)
        XCTAssertGreaterThan(run.verdictCount("acknowledged"), acknowledged, run.table, file: file, line: line)
    }

    /// kill -9 at random moments, restarted each time on the same ports and data directory.
    func testKillNineAtRandomMomentsUnderLoadLosesNothing() async throws {
        let cycles = Int(ProcessInfo.processInfo.environment["COURIER_SIM_KILL_CYCLES"] ?? "") ?? level.pick(short: 3, full: 20, soak: 40)
        let seed = UInt64(Date().timeIntervalSince1970)
        var random = SplitMix64(seed: seed)
        fault = "kill -9 of the server × \(cycles), 1.5-4.5 s apart (seed \(seed))"
        try await withServer { server in
            let arguments = fleet(seconds: cycles * 4 + 5)
            async let running = Simulator.run(server, arguments, timeout: Double(cycles * 8 + 400))
            try await Task.sleep(for: .seconds(3))
            for _ in 0..<cycles {
                try await Task.sleep(for: .milliseconds(Int64.random(in: 1500...4500, using: &random)))
                await server.kill9()
                try await server.start()
            }
            let run = try await running
            figure = "\(cycles) cycles; \(run.verdictSummary); reconnects \(run.count("reconnects"))"
            assertNothingLost(run, atLeast: 100)
            XCTAssertGreaterThanOrEqual(run.count("reconnects"), cycles * 20, "every device's session was cut at each kill\n\(run.table)")
        }
    }

    /// The consumers store and push a batch, and the process dies just before committing its
    /// offset: the restarted server replays those records, and no device sees a message twice.
    func testAConsumerKilledBetweenStoringAndCommittingDeliversExactlyOnce() async throws {
        let crashes = level.pick(short: 2, full: 5, soak: 10)
        fault = "SIGKILL after storing and pushing, before the offset commit × \(crashes)"
        let fault = ["--test-crash-before-commit", "20"]
        try await withServer(fault) { server in
            let arguments = fleet(seconds: crashes * 4 + 6)
            async let running = Simulator.run(server, arguments, timeout: Double(crashes * 8 + 400))
            for crash in 1...crashes {
                // Each start with the fault dies at its 20th commit (commits come at most every 250 ms per partition); the last restart runs on.
                let died = try await server.waitForExit(timeout: 60)
                XCTAssertTrue(died, "crash \(crash): the fault did not fire")
                if !died { await server.kill9() }
                do {
                    try await server.start(crash < crashes ? fault : [])
                } catch where crash < crashes && server.serverLog().components(separatedBy: "killed before offset commit").count > crash + 1 {
                    // It reached its 20th commit before it answered the first health check.
                }
            }
            let run = try await running
            let log = server.serverLog()
            let kills = log.components(separatedBy: "TEST FAULT: killed before offset commit").count - 1
            // A replay: a consumer resumed below what its log held.
            let replays = log.split(separator: "\n").filter { line in
                guard line.contains("consumer resumes"),
                      let offset = Self.number(after: "offset=", in: line), let end = Self.number(after: "logEnd=", in: line) else { return false }
                return end > offset
            }.count
            figure = "\(kills) kills before commit, \(replays) partitions replayed; \(run.verdictSummary)"
            assertNothingLost(run, atLeast: 100)
            XCTAssertEqual(kills, crashes, "each restart with the fault died at its commit")
            XCTAssertGreaterThan(replays, 0, "the restarted server replayed records whose offsets were never committed")
        }
    }

    /// SIGSTOP for longer than the devices' exchange timeout (20 s) and three heartbeat
    /// intervals, then SIGCONT: the devices time out, back off, reconnect and lose nothing.
    func testAServerFrozenLongerThanTheClientsTimeoutsIsRecoveredFrom() async throws {
        let frozen = level.pick(short: 25, full: 30, soak: 90)
        fault = "SIGSTOP for \(frozen) s (devices: 20 s exchange timeout, 3 × 2 s heartbeat), then SIGCONT"
        try await withServer { server in
            await server.kill9()
            try await server.start(["--config", try ServerProcess.configFile(["heartbeatSeconds": 2])])
            let arguments = fleet(seconds: frozen + 15)
            async let running = Simulator.run(server, arguments, timeout: Double(frozen + 400))
            try await Task.sleep(for: .seconds(5))
            server.signal(SIGSTOP)
            try await Task.sleep(for: .seconds(frozen))
            server.signal(SIGCONT)
            let run = try await running
            let failures = (run.report["transport_failures"] as? [String: Any] ?? [:]).values.compactMap { ($0 as? NSNumber)?.intValue }.reduce(0, +)
            figure = "frozen \(frozen) s; \(failures) exchanges failed, \(run.count("reconnects")) reconnects; \(run.verdictSummary)"
            assertNothingLost(run, atLeast: 100)
            XCTAssertGreaterThan(failures, 0, "exchanges timed out while the server was frozen\n\(run.table)")
            XCTAssertGreaterThanOrEqual(run.count("reconnects"), 40, "every device noticed the silent server and reconnected\n\(run.table)")
        }
    }

    private static func number(after key: String, in line: Substring) -> UInt64? {
        guard let range = line.range(of: key) else { return nil }
        return UInt64(line[range.upperBound...].prefix { $0.isNumber })
    }
}
