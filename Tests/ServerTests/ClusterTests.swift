import CoAP
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// Cluster mode with real processes: `courier-server` nodes on one real PostgreSQL (a throwaway
/// server, `TestPostgres`), judged by the simulator's oracle across them.
final class ClusterTests: XCTestCase {
    /// A migrated database of its own and `count` started nodes on it.
    func startCluster(nodes count: Int) async throws -> (url: String, nodes: [ServerProcess]) {
        let url = try TestPostgres.newDatabase()
        let migrated = try await ExternalProgram.run(ServerProcess.binary, ["migrate", "--postgres", url], timeout: 60)
        guard migrated.status == 0 else { throw ServerTestError("migrate failed: \(migrated.stderr)") }
        var nodes: [ServerProcess] = []
        for _ in 0..<count {
            let node = try await ServerProcess()
            node.postgres = url
            nodes.append(node)
            try await node.start()
        }
        return (url, nodes)
    }

    func withCluster(nodes count: Int, _ body: ([ServerProcess]) async throws -> Void) async throws {
        let (_, nodes) = try await startCluster(nodes: count)
        do {
            try await body(nodes)
        } catch {
            var logs = ""
            for (index, node) in nodes.enumerated() { logs += "\n--- node \(index) log (last 2000 bytes) ---\n\(node.serverLog().suffix(2000))" }
            for node in nodes { await node.kill9(); node.remove() }
            throw ServerTestError("\(error)\(logs)")
        }
        for node in nodes { await node.kill9(); node.remove() }
    }

    func assertClean(_ run: SimulatorRun, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.status, 0, run.table, file: file, line: line)
        XCTAssertGreaterThan(run.verdictCount("acknowledged"), 0, run.table, file: file, line: line)
        XCTAssertEqual(run.verdictCount("lost"), 0, run.table, file: file, line: line)
        XCTAssertEqual(run.verdictCount("duplicates"), 0, run.table, file: file, line: line)
        XCTAssertEqual(run.verdictCount("order_violations"), 0, run.table, file: file, line: line)
    }

    /// Every device keeps its push session on one node and sends through another, so every
    /// message is committed by one node and pushed by the others.
    func testThreeNodesSpreadDevicesAndTheOracleFindsNothingLostDuplicatedOrReordered() async throws {
        try await withCluster(nodes: 3) { nodes in
            let run = try await Simulator.run(cluster: nodes, ["--users", "30", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "6", "--ramp-up", "1"])
            assertClean(run)
            XCTAssertEqual(run.verdictCount("delivered"), run.verdictCount("expected_deliveries"), run.table)
            for node in nodes {
                let pushed = try await node.metric("courier_push_messages_total") ?? 0
                XCTAssertGreaterThan(pushed, 0, "every node pushed to the devices it holds")
            }
        }
    }

    /// A retry sent to another node is the same message: same server id, same sequence; the
    /// same client message id with another text is a conflict on any node.
    func testARetryOnAnotherNodeGetsTheSameIDAndSequence() async throws {
        try await withCluster(nodes: 2) { nodes in
            let ann = try await nodes[0].account("ann")
            let chat = try await nodes[0].chat("general", members: ["ann"])
            try await withClient { client in
                var message = SendMessage(clientMessageID: "m-1", chatID: chat, text: "hello from two nodes", clientSentAtMs: 0)
                var answers: [SendResult] = []
                for node in [nodes[0], nodes[1], nodes[0]] {
                    let response = try await client.send(message, token: ann.token, to: node.peer)
                    XCTAssertEqual(response.code, .created)
                    answers.append(try SendResult(serializedBytes: response.payload))
                }
                XCTAssertEqual(Set(answers.map(\.serverMessageID)).count, 1, "\(answers)")
                XCTAssertEqual(answers.map(\.chatSequence), [1, 1, 1])
                message.text = "another text under the same id"
                let conflict = try await client.send(message, token: ann.token, to: nodes[1].peer)
                XCTAssertEqual(conflict.code, .conflict)
                let second = SendMessage(clientMessageID: "m-2", chatID: chat, text: "next", clientSentAtMs: 0)
                let next = try await client.send(second, token: ann.token, to: nodes[1].peer)
                XCTAssertEqual(try SendResult(serializedBytes: next.payload).chatSequence, 2, "the sequence goes on gapless on the other node")
            }
            let history = try await nodes[1].history("general")
            XCTAssertEqual(history.map(\.clientMessageID), ["m-1", "m-2"])
        }
    }

    /// kill -9 of one node while the fleet sends: its devices move to the other nodes, sends
    /// that were on their way to it are retried elsewhere, and nothing is lost or repeated.
    func testKillNineOfANodeUnderLoadLosesNothing() async throws {
        try await withCluster(nodes: 3) { nodes in
            let victim = nodes[1]
            let killer = Task {
                try await Task.sleep(for: .seconds(4))
                await victim.kill9()
            }
            let run = try await Simulator.run(cluster: nodes, [
                "--users", "30", "--devices-per-user", "2", "--members", "2", "--rate", "2", "--duration", "10", "--ramp-up", "1", "--settle-timeout", "60",
            ])
            try await killer.value
            assertClean(run)
            XCTAssertGreaterThan(run.count("reconnects"), 0, "the killed node's devices reconnected elsewhere\n\(run.table)")
        }
    }

    /// A node on a database without Courier's schema, or one it cannot reach, exits at start
    /// with a message that says what to do.
    func testANodeRefusesAnUnmigratedOrUnreachableDatabase() async throws {
        let empty = try TestPostgres.newDatabase()
        let node = try await ServerProcess()
        defer { node.remove() }
        node.postgres = empty
        do {
            try await node.start()
            XCTFail("a node started on a database with no schema")
        } catch {
            XCTAssertTrue("\(error)".contains("courier-server migrate"), "\(error)")
        }
        var unreachable = URLComponents(string: empty)!
        unreachable.port = try await freeTCPPort()
        node.postgres = unreachable.string!
        do {
            try await node.start()
            XCTFail("a node started without its database")
        } catch {
            XCTAssertTrue("\(error)".contains("cannot reach PostgreSQL at 127.0.0.1:\(unreachable.port!)"), "\(error)")
        }
    }
}
