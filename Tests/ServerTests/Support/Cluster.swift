import Foundation
import TestSupport
import XCTest

// Cluster mode's test helpers: nodes on a database of their own on the tests' PostgreSQL.

/// A migrated database of its own (on the tests' PostgreSQL unless `url` names one) and `count`
/// started nodes on it, each started with `arguments` besides its own.
func startCluster(nodes count: Int, url given: String? = nil, arguments: [String] = []) async throws -> [ServerProcess] {
    let url = try given ?? TestPostgres.newDatabase()
    let migrated = try await ExternalProgram.run(ServerProcess.binary, ["migrate", "--postgres", url], timeout: 60)
    guard migrated.status == 0 else { throw ServerTestError("migrate failed: \(migrated.stderr)") }
    var nodes: [ServerProcess] = []
    for _ in 0..<count {
        let node = try await ServerProcess()
        node.postgres = url
        nodes.append(node)
        try await node.start(arguments)
    }
    return nodes
}

/// Runs `body` with a started cluster; every node is killed and removed however it ends (their
/// logs go into the failure).
func withCluster(nodes count: Int, url: String? = nil, arguments: [String] = [], _ body: ([ServerProcess]) async throws -> Void) async throws {
    let nodes = try await startCluster(nodes: count, url: url, arguments: arguments)
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

/// Runs `body` with nodes on a replicated PostgreSQL of the test's own (`TestHA`: etcd x3,
/// `members` PostgreSQL members under Patroni, each in a network namespace when `isolatable`);
/// everything is stopped however it ends.
func withHACluster(nodes count: Int, members: Int = 2, isolatable: Bool = false, _ body: (TestHA, [ServerProcess]) async throws -> Void) async throws {
    let ha = try await TestHA.start(members: members, isolatable: isolatable)
    do {
        let url = try await ha.newDatabase("courier")
        try await withCluster(nodes: count, url: url) { nodes in try await body(ha, nodes) }
    } catch {
        let status = (try? await TestHA.offPool("\(TestPostgres.repositoryRoot)/scripts/ha", ["status", ha.directory])) ?? ""
        await ha.stop()
        throw ServerTestError("\(error)\nPatroni:\n\(status)")
    }
    await ha.stop()
}

/// The oracle found nothing lost, duplicated or reordered in a run that acknowledged something.
func assertOracleClean(_ run: SimulatorRun, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(run.status, 0, run.table, file: file, line: line)
    XCTAssertGreaterThan(run.verdictCount("acknowledged"), 0, run.table, file: file, line: line)
    XCTAssertEqual(run.verdictCount("lost"), 0, run.table, file: file, line: line)
    XCTAssertEqual(run.verdictCount("duplicates"), 0, run.table, file: file, line: line)
    XCTAssertEqual(run.verdictCount("order_violations"), 0, run.table, file: file, line: line)
}
