import CoAP
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// Cluster mode on a replicated PostgreSQL (`TestHA`: etcd x3, two PostgreSQL members under
/// Patroni, strict synchronous mode): the primary's machine dies or hands over under load, and
/// the oracle judges every acknowledgement. Real processes throughout.
final class HAReliabilityTests: ReliabilityTestCase {
    /// kill -9 of the primary's Patroni and PostgreSQL under load (once in the short suite,
    /// twice in the full, 5 times in the soak): the synchronous standby is promoted, the nodes move to it by
    /// themselves, and once the dead member is back as a standby (strict synchronous mode: with
    /// two members, the new primary acknowledges nothing alone) acknowledgements resume. Nothing
    /// acknowledged is lost, duplicated or reordered.
    func testKillNineOfThePrimaryUnderLoadLosesNothing() async throws {
        let rounds = level.pick(short: 1, full: 2, soak: 5)
        fault = "kill -9 of the PostgreSQL primary's Patroni and postmaster under load, back 2 s after the failover; \(rounds)x"
        try await withHACluster(nodes: 3) { ha, nodes in
            let probe = try await Probe(nodes[0])
            let killer = Task { () -> [(promoted: Double, acknowledging: Double)] in
                var times: [(Double, Double)] = []
                for _ in 0..<rounds {
                    try await Task.sleep(for: .seconds(5))
                    let primary = try await ha.primary()
                    let killed = ContinuousClock.now
                    try await ha.kill(primary)
                    let promoted = try await ha.primary()
                    XCTAssertNotEqual(promoted, primary)
                    let promotedAfter = (ContinuousClock.now - killed).seconds
                    try await Task.sleep(for: .seconds(2))
                    try await ha.revive(primary)
                    do {
                        try await probe.untilAcknowledged(within: .seconds(90))
                    } catch {
                        let moves = nodes.enumerated().map { index, node in
                            "node \(index): " + node.serverLog().split(separator: "\n").filter { $0.contains("PostgreSQL") || $0.contains("primary") }.suffix(8).joined(separator: "\n")
                        }
                        throw ServerTestError("\(error)\n\(await ha.diagnostics(database: "courier"))\n\(moves.joined(separator: "\n"))")
                    }
                    times.append((promotedAfter, (ContinuousClock.now - killed).seconds))
                    _ = try await ha.standby()
                }
                return times
            }
            let run = try await Simulator.run(cluster: nodes, [
                "--users", "30", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "\(rounds * 30 + 5)", "--ramp-up", "1",
                "--settle-timeout", "120",
            ], timeout: Double(rounds * 30 + 300))
            let times = try await killer.value
            figure = "\(run.verdictSummary), \(run.answers("5.03")) answers 5.03, \(givenUp(nodes)); "
                + times.map { String(format: "promoted %.1f s, acknowledging again %.1f s after the kill", $0.promoted, $0.acknowledging) }.joined(separator: "; ")
            assertOracleClean(run)
            XCTAssertGreaterThan(run.answers("5.03"), 0, "sends were refused while there was no primary\n\(run.table)")
        }
    }

    /// The primary cut off from everyone (its network namespace drops every packet) under load:
    /// it can no longer acknowledge (strict synchronous mode: its standby is out of reach), the
    /// standby is promoted, and when the old primary is reachable again it rejoins as the
    /// synchronous standby (pg_rewind). Nothing acknowledged is lost, and both members end with
    /// the same history: nothing forked.
    func testAnIsolatedPrimaryStopsAcknowledgingAndRejoinsAsAStandby() async throws {
        guard geteuid() == 0 else { throw XCTSkip("network namespaces need root") }
        fault = "the PostgreSQL primary isolated (iptables in its network namespace) under load, reachable again 3 s after the failover"
        try await withHACluster(nodes: 3, isolatable: true) { ha, nodes in
            let probe = try await Probe(nodes[0])
            let isolation = Task { () -> (promoted: Double, acknowledging: Double, old: String) in
                try await Task.sleep(for: .seconds(5))
                let primary = try await ha.primary()
                let isolated = ContinuousClock.now
                try await ha.isolate(primary)
                let promoted = try await ha.primary()
                XCTAssertNotEqual(promoted, primary)
                let promotedAfter = (ContinuousClock.now - isolated).seconds
                let alone = try await probe.once()
                XCTAssertNotEqual(alone, .created, "the new primary acknowledged with no synchronous standby")
                try await Task.sleep(for: .seconds(3))
                try await ha.reconnect(primary)
                try await probe.untilAcknowledged(within: .seconds(90))
                let acknowledgingAfter = (ContinuousClock.now - isolated).seconds
                let standby = try await ha.standby()
                XCTAssertEqual(standby, primary, "the old primary rejoined as the synchronous standby")
                return (promotedAfter, acknowledgingAfter, primary)
            }
            let run = try await Simulator.run(cluster: nodes, [
                "--users", "30", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "35", "--ramp-up", "1", "--settle-timeout", "120",
            ], timeout: 300)
            let times = try await isolation.value
            figure = "\(run.verdictSummary), \(run.answers("5.03")) answers 5.03; "
                + String(format: "promoted %.1f s, acknowledging again %.1f s after the isolation", times.promoted, times.acknowledging) + ", \(givenUp(nodes))"
            assertOracleClean(run)
            // Nothing forked: the old primary, now a standby, holds exactly what the new one does.
            let history = "SELECT count(*) || ' ' || md5(coalesce(string_agg(chat_id || ':' || sequence || ':' || server_message_id, ',' ORDER BY chat_id, sequence), '')) FROM messages"
            let newPrimary = try await ha.primary()
            var held: [String] = []
            for _ in 0..<50 {
                held = try [newPrimary, times.old].map { try TestPostgres.psql(ha.memberURL($0, database: "courier"), history).trimmingCharacters(in: .whitespacesAndNewlines) }
                if held[0] == held[1] { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            XCTAssertEqual(held[0], held[1], "the members' histories differ")
        }
    }

    /// `patronictl switchover` under load: the primary hands over to the synchronous standby;
    /// the nodes follow, and the oracle sees nothing but a pause.
    func testASwitchoverUnderLoadLosesNothing() async throws {
        fault = "patronictl switchover under load"
        try await withHACluster(nodes: 3) { ha, nodes in
            let before = try await ha.primary()
            let switchover = Task {
                try await Task.sleep(for: .seconds(5))
                try await ha.switchover()
            }
            let run = try await Simulator.run(cluster: nodes, [
                "--users", "30", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "20", "--ramp-up", "1", "--settle-timeout", "90",
            ])
            try await switchover.value
            let after = try await ha.primary()
            figure = "\(run.verdictSummary), \(run.answers("5.03")) answers 5.03, primary \(before) -> \(after), \(givenUp(nodes))"
            XCTAssertNotEqual(before, after, "the switchover moved the primary")
            assertOracleClean(run)
        }
    }

    /// The synchronous-replication trap: a commit whose wait for the standby is cancelled stays
    /// on the primary, visible but not replicated. A retry that finds that row must not be
    /// acknowledged on the strength of finding it: only once a commit of its own has replicated
    /// (which orders the row it found before it). With the standby's WAL receiver stopped, the
    /// first send and every retry get 5.03, even after the first one's wait is cancelled and its
    /// row is there; once the standby runs again, the retry gets 2.01 with that row's sequence.
    func testARetryThatFindsAnUnreplicatedRowIsNotAcknowledgedUntilItsOwnCommitReplicates() async throws {
        fault = "the synchronous standby's WAL receiver stopped, a commit's wait cancelled, the send retried"
        try await withHACluster(nodes: 1) { ha, nodes in
            let node = nodes[0]
            let ann = try await node.account("ann")
            let chat = try await node.chat("general", members: ["ann"])
            try await withClient { client in
                let first = SendMessage(clientMessageID: "before", chatID: chat, text: "replicated", clientSentAtMs: 0)
                let replicated = try await client.send(first, token: ann.token, to: node.peer)
                XCTAssertEqual(replicated.code, .created)

                let standby = try await ha.standby()
                let receivers = try ha.processes(of: standby, "walreceiver")
                XCTAssertFalse(receivers.isEmpty, "the standby has a WAL receiver")
                for pid in receivers { kill(pid, SIGSTOP) }
                defer { for pid in receivers { kill(pid, SIGCONT) } }

                let message = SendMessage(clientMessageID: "trap", chatID: chat, text: "committed locally only", clientSentAtMs: 0)
                let waiting = try await client.send(message, token: ann.token, to: node.peer)
                XCTAssertEqual(waiting.code, .serviceUnavailable, "no acknowledgement while the standby has not got the commit")

                // What an operator's pg_cancel_backend (or a timeout) does to the waiting commit.
                let primaryURL = try await self.memberURL(ha, try await ha.primary())
                let cancelled = try TestPostgres.psql(primaryURL, "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
                XCTAssertGreaterThanOrEqual(Int(cancelled.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 1, "the send's commit was waiting for the standby")
                let visible = try TestPostgres.psql(primaryURL.replacingOccurrences(of: "/postgres?", with: "/courier?"),
                                                    "SELECT count(*) FROM messages WHERE client_message_id = 'trap'")
                XCTAssertEqual(visible.trimmingCharacters(in: .whitespacesAndNewlines), "1", "the cancelled commit's row is on the primary")

                let retried = try await client.send(message, token: ann.token, to: node.peer)
                XCTAssertEqual(retried.code, .serviceUnavailable, "a retry that found the unreplicated row was acknowledged")

                for pid in receivers { kill(pid, SIGCONT) }
                var answer = try await client.send(message, token: ann.token, to: node.peer)
                for _ in 0..<10 where answer.code != .created {
                    try await Task.sleep(for: .milliseconds(500))
                    answer = try await client.send(message, token: ann.token, to: node.peer)
                }
                XCTAssertEqual(answer.code, .created)
                let result = try SendResult(serializedBytes: answer.payload)
                XCTAssertEqual(result.chatSequence, 2, "the row the retry found, not a copy")
                figure = "the send and its retry: 5.03 while the standby lagged; 2.01 with sequence 2 once it ran"
            }
            let history = try await node.history("general")
            XCTAssertEqual(history.map(\.clientMessageID), ["before", "trap"])
        }
    }

    /// A member's own URL (its port, from `scripts/ha`'s port list), on the `postgres` database.
    private func memberURL(_ ha: TestHA, _ member: String) async throws -> String {
        let ports = try String(contentsOfFile: "\(ha.directory)/ports", encoding: .utf8)
        guard let line = ports.split(separator: "\n").first(where: { $0.hasPrefix("pg-\(member) ") }), let port = line.split(separator: " ").last else {
            throw ServerTestError("no port for \(member)")
        }
        return "postgres://courier:courier@127.0.0.1:\(port)/postgres?sslmode=disable"
    }
}

/// Sends probe messages of its own through one node until one is acknowledged: when
/// acknowledgements resumed after a failover.
private struct Probe {
    let node: ServerProcess
    let account: ServerProcess.Account
    let chat: UInt64

    init(_ node: ServerProcess) async throws {
        self.node = node
        account = try await node.account("probe")
        chat = try await node.chat("probe", members: ["probe"])
    }

    /// One probe: its answer's code, or nil when none came.
    func once() async throws -> CoAPCode? {
        try await withClient { client in
            let message = SendMessage(clientMessageID: "probe-\(UUID().uuidString)", chatID: chat, text: "probe", clientSentAtMs: 0)
            return try? await client.send(message, token: account.token, to: node.peer).code
        }
    }

    func untilAcknowledged(within limit: Duration) async throws {
        let deadline = ContinuousClock.now + limit
        try await withClient { client in
            while ContinuousClock.now < deadline {
                let message = SendMessage(clientMessageID: "probe-\(UUID().uuidString)", chatID: chat, text: "probe", clientSentAtMs: 0)
                if let answer = try? await client.send(message, token: account.token, to: node.peer), answer.code == .created { return }
                try await Task.sleep(for: .milliseconds(200))
            }
            throw ServerTestError("no acknowledgement within \(limit) after the failover")
        }
    }
}

private extension Duration {
    var seconds: Double { self / .seconds(1) }
}

/// How many queries the nodes gave up on at the answer limit (`PostgresStorage.answerLimit`) and
/// how many of those answered later (one that never does had its answer lost), and how many
/// moves to a new primary gave up queries still waiting on the old one.
private func givenUp(_ nodes: [ServerProcess]) -> String {
    let logs = nodes.map { $0.serverLog() }
    func count(_ text: String) -> Int { logs.reduce(0) { $0 + $1.components(separatedBy: text).count - 1 } }
    return "queries given up at the limit \(count("no answer within the limit")) (answered later \(count("given up on answered after all"))), "
        + "moves that gave up queries on the old primary \(count("queries to the old primary no longer waited for"))"
}
