import Foundation
import TestSupport
import XCTest

/// The reliability suite's faults on cluster mode: real `courier-server` nodes on a real
/// PostgreSQL (`TestPostgres`), judged by the simulator's oracle across them.
final class ClusterReliabilityTests: ReliabilityTestCase {
    /// kill -9 of one node while the fleet sends, and the node started again (once in the
    /// short suite, 3 times in the full one, 10 in the soak, a different node each time): its
    /// devices move to the other nodes, sends on their way to it are retried elsewhere, and
    /// nothing is lost or repeated.
    func testKillNineOfANodeUnderLoadLosesNothing() async throws {
        let rounds = level.pick(short: 1, full: 3, soak: 10)
        fault = "kill -9 of one of 3 cluster nodes under load, then a restart; \(rounds)x"
        try await withCluster(nodes: 3) { nodes in
            let killer = Task {
                for round in 0..<rounds {
                    try await Task.sleep(for: .seconds(4))
                    let victim = nodes[round % nodes.count]
                    await victim.kill9()
                    try await Task.sleep(for: .seconds(2))
                    try await victim.start()
                }
            }
            let run = try await Simulator.run(cluster: nodes, [
                "--users", "30", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "\(rounds * 6 + 4)", "--ramp-up", "1",
                "--settle-timeout", "60",
            ], timeout: Double(rounds * 6 + 200))
            try await killer.value
            figure = "\(run.verdictSummary), \(run.count("reconnects")) session reconnects"
            assertOracleClean(run)
            XCTAssertGreaterThan(run.count("reconnects"), 0, "the killed node's devices reconnected elsewhere\n\(run.table)")
        }
    }

    /// SIGSTOP of a node for 8 s under load: the other nodes go on (a batch of sends is one
    /// statement, which PostgreSQL finishes without the node, so a stopped node holds no chat's
    /// row), and after SIGCONT whatever the node answers from before its pause or commits after
    /// it is judged with every other acknowledgement of the run by the oracle.
    func testAStoppedNodeCannotCommitAfterPostgreSQLEndedItsTransactions() async throws {
        fault = "SIGSTOP of one of 3 cluster nodes for 8 s under load"
        try await withCluster(nodes: 3) { nodes in
            let sleeper = nodes[2]
            let pause = Task {
                try await Task.sleep(for: .seconds(3))
                sleeper.signal(SIGSTOP)
                try await Task.sleep(for: .seconds(8))
                sleeper.signal(SIGCONT)
            }
            let run = try await Simulator.run(cluster: nodes, [
                "--users", "30", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "14", "--ramp-up", "1", "--settle-timeout", "90",
            ])
            try await pause.value
            figure = run.verdictSummary
            assertOracleClean(run)
            let sent = try await nodes[0].metric("courier_log_appends_total{result=\"ok\"}") ?? 0
            XCTAssertGreaterThan(sent, 0, "the nodes that were not stopped committed")
        }
    }

    /// PostgreSQL restarted as a crash would (`pg_ctl stop -m immediate`, then start): the nodes
    /// answer 5.03 meanwhile, reconnect by themselves, and nothing acknowledged is lost.
    func testAPostgreSQLRestartUnderLoadLosesNothing() async throws {
        _ = try TestPostgres.serverURL()
        guard let directory = TestPostgres.directory else {
            throw XCTSkip("COURIER_TEST_POSTGRES names a server this test cannot restart")
        }
        fault = "PostgreSQL crashed (pg_ctl stop -m immediate) for 6 s under load, 2 cluster nodes"
        try await withCluster(nodes: 2) { nodes in
            let restart = Task {
                try await Task.sleep(for: .seconds(4))
                try TestPostgres.run("\(TestPostgres.repositoryRoot)/scripts/postgres", ["stop", directory, "immediate"])
                // Longer than a send waits for its commit (3 s), so the nodes answer 5.03.
                try await Task.sleep(for: .seconds(6))
                try TestPostgres.run("\(TestPostgres.repositoryRoot)/scripts/postgres", ["resume", directory])
            }
            let run = try await Simulator.run(cluster: nodes, [
                "--users", "20", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "16", "--ramp-up", "1", "--settle-timeout", "90",
            ])
            try await restart.value
            figure = "\(run.verdictSummary), \(run.answers("5.03")) answers 5.03"
            assertOracleClean(run)
            XCTAssertGreaterThan(run.answers("5.03"), 0, "the nodes answered 5.03 while PostgreSQL was down\n\(run.table)")
        }
    }
}
