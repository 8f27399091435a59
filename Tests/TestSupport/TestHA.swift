import Foundation
import Glibc
import NIOCore
import NIOPosix

/// A replicated PostgreSQL of one test's own: `scripts/ha` in a temporary directory (three etcd
/// members, PostgreSQL members under Patroni with a synchronous standby), on loopback ports no
/// one else holds. The test kills, revives and switches over its members; `stop` ends it all.
public final class TestHA: Sendable {
    public let directory: String
    /// The `postgres` database on every member (the nodes find the primary among them).
    public let serverURL: String

    private init(directory: String, serverURL: String) {
        self.directory = directory
        self.serverURL = serverURL
    }

    /// Starts etcd x3 and `members` PostgreSQL members; returns once there is a primary and a
    /// synchronous standby.
    /// With `isolatable`, each member runs in a network namespace of its own (`scripts/ha start
    /// --netns`, root only), so that `isolate` can cut it off.
    public static func start(members: Int = 2, isolatable: Bool = false) async throws -> TestHA {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-test-ha-\(getpid())-\(UUID().uuidString.prefix(8))").path
        let base = try freePortRun(count: 6 + 2 * members)
        let output: String
        do {
            output = try await script(["start"] + (isolatable ? ["--netns"] : []) + [directory, "\(base)", "\(members)"])
        } catch {
            // A start that gave up (no standby in time) has etcd and Patroni running: stop them,
            // or they outlive the test.
            _ = try? await script(["stop", directory])
            throw error
        }
        return TestHA(directory: directory, serverURL: output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// A new, empty database (created on the primary); returns its URL, naming every member.
    public func newDatabase(_ name: String) async throws -> String {
        let base = serverURL.replacingOccurrences(of: "?sslmode=disable", with: "")
        _ = try await Self.offPool("/usr/bin/psql", [base + "?sslmode=disable&target_session_attrs=read-write", "-v", "ON_ERROR_STOP=1", "-qc", "CREATE DATABASE \(name)"])
        return base.replacingOccurrences(of: "/postgres", with: "/\(name)") + "?sslmode=disable"
    }

    /// The primary's member name (`pg1`, `pg2`, ...), waiting up to 60 s for there to be one.
    public func primary() async throws -> String { try await Self.script(["primary", directory]).trimmingCharacters(in: .whitespacesAndNewlines) }

    /// The synchronous standby's member name, waiting up to 60 s for there to be one.
    public func standby() async throws -> String { try await Self.script(["standby", directory]).trimmingCharacters(in: .whitespacesAndNewlines) }

    /// kill -9 of the member's Patroni and PostgreSQL: its machine dies.
    public func kill(_ member: String) async throws { _ = try await Self.script(["kill", directory, member]) }

    /// Starts a killed member's Patroni again; it rejoins as a standby.
    public func revive(_ member: String) async throws { _ = try await Self.script(["revive", directory, member]) }

    /// Drops every packet to and from the member (started `isolatable`).
    public func isolate(_ member: String) async throws { _ = try await Self.script(["isolate", directory, member]) }

    /// Lets the member's packets through again.
    public func reconnect(_ member: String) async throws { _ = try await Self.script(["reconnect", directory, member]) }

    /// The URL of `database` on one member alone (a standby's is read-only).
    public func memberURL(_ member: String, database: String) throws -> String {
        let ports = try String(contentsOfFile: "\(directory)/ports", encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") }
        func value(_ key: String) -> String? { ports.first { $0.first.map(String.init) == key }?.last.map(String.init) }
        guard let port = value("pg-\(member)") else { throw TestPostgres.Failure(command: "memberURL", status: 0, stderr: "no member \(member)") }
        return "postgres://courier:courier@\(value("address-\(member)") ?? "127.0.0.1"):\(port)/\(database)?sslmode=disable"
    }

    /// What a stalled test needs to be understood: Patroni's view, and on each member every
    /// session of `database` (what it waits on, for how long) and every lock not granted.
    public func diagnostics(database: String) async -> String {
        var report = ((try? await Self.script(["status", directory])) ?? "patronictl list failed") + "\n"
        let members = ((try? String(contentsOfFile: "\(directory)/ports", encoding: .utf8)) ?? "").split(separator: "\n")
            .compactMap { $0.hasPrefix("pg-") ? $0.split(separator: " ").first.map { String($0.dropFirst(3)) } : nil }
        for member in members {
            let sessions = """
                SELECT pid, state, coalesce(wait_event_type || ':' || wait_event, '-'), coalesce(extract(epoch FROM now() - xact_start)::int, -1), left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
                FROM pg_stat_activity WHERE datname = '\(database)' ORDER BY xact_start NULLS LAST
                """
            let locks = "SELECT pid, locktype, mode, relation::regclass, transactionid FROM pg_locks WHERE NOT granted"
            let answer = (try? memberURL(member, database: database)).map { url in
                ["sessions": sessions, "locks not granted": locks].map { name, sql in
                    "\(name):\n" + ((try? TestPostgres.psql(url, sql)) ?? "(no answer)")
                }.joined(separator: "\n")
            } ?? "(no URL)"
            report += "--- \(member)\n\(answer)\n"
        }
        return report
    }

    /// `patronictl switchover` to the synchronous standby.
    public func switchover() async throws { _ = try await Self.script(["switchover", directory]) }

    /// The processes of the member's PostgreSQL whose command line contains `role` (such as
    /// "walreceiver"), for a test to stop and continue them.
    public func processes(of member: String, _ role: String) throws -> [pid_t] {
        let postmasterFile = "\(directory)/\(member)/data/postmaster.pid"
        guard let postmaster = (try? String(contentsOfFile: postmasterFile, encoding: .utf8))?.split(separator: "\n").first.flatMap({ pid_t($0) }) else {
            return []
        }
        var found: [pid_t] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let parent = stat.split(separator: ")").last?.split(separator: " ").dropFirst(1).first.flatMap({ pid_t($0) }),
                  parent == postmaster,
                  let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
                  command.contains(role) else { continue }
            found.append(pid)
        }
        return found
    }

    /// Stops everything and removes the directory.
    public func stop() async {
        _ = try? await Self.script(["stop", directory])
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func script(_ arguments: [String]) async throws -> String {
        try await offPool("\(TestPostgres.repositoryRoot)/scripts/ha", arguments)
    }

    /// `TestPostgres.run` on a thread of its own: these commands wait for seconds, and the
    /// cooperative pool has only as many threads as cores.
    public static func offPool(_ executable: String, _ arguments: [String]) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try TestPostgres.run(executable, arguments) }) }
        }
    }
}
