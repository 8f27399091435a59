import Foundation
import Glibc
import Synchronization

/// The real PostgreSQL the tests of cluster mode use: the server `COURIER_TEST_POSTGRES` names (a
/// URL of a superuser's database), or else a throwaway one this test process starts with
/// `scripts/postgres` on a free port and stops when it exits. Each test takes a database of its own.
public enum TestPostgres {
    private struct Server: Sendable {
        var url: String
        /// The data directory, when this process started the server.
        var directory: String?
    }

    private static let server = Mutex<Server?>(nil)
    private static let databases = Atomic<Int>(0)

    /// The repository's root, found from this file's place in it.
    public static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// The URL of the shared server's `postgres` database, starting the server on first use.
    public static func serverURL() throws -> String {
        try server.withLock { server in
            if let server { return server.url }
            if let url = ProcessInfo.processInfo.environment["COURIER_TEST_POSTGRES"], !url.isEmpty {
                server = Server(url: url)
                return url
            }
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-test-pg-\(getpid())-\(UUID().uuidString.prefix(8))").path
            // fsync off: the tests kill processes, not the machine. Connections: many tests, each
            // with a pool of its own.
            let output = try run("\(repositoryRoot)/scripts/postgres", ["start", directory, "\(try TestSupport.freePort())", "fsync=off", "max_connections=400"])
            let url = output.trimmingCharacters(in: .whitespacesAndNewlines)
            server = Server(url: url, directory: directory)
            atexit { TestPostgres.stopStartedServer() }
            return url
        }
    }

    /// A new, empty database on the shared server; returns its URL.
    public static func newDatabase() throws -> String {
        let base = try serverURL()
        let name = "courier_test_\(getpid())_\(databases.add(1, ordering: .relaxed).newValue)"
        _ = try run("/usr/bin/psql", [base, "-v", "ON_ERROR_STOP=1", "-qc", "CREATE DATABASE \(name)"])
        return url(base, database: name)
    }

    /// `base` with its database replaced by `database`.
    public static func url(_ base: String, database: String) -> String {
        var components = URLComponents(string: base)!
        components.path = "/\(database)"
        return components.string!
    }

    /// Runs `psql` on `url` with `sql`; returns what it printed (unaligned, tuples only).
    @discardableResult
    public static func psql(_ url: String, _ sql: String) throws -> String {
        try run("/usr/bin/psql", [url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
    }

    /// The data directory of the server this process started (nil when it uses one it was given).
    public static var directory: String? { server.withLock { $0?.directory } }

    private static func stopStartedServer() {
        guard let directory = server.withLock({ $0?.directory }) else { return }
        _ = try? run("\(repositoryRoot)/scripts/postgres", ["stop", directory, "immediate"])
        try? FileManager.default.removeItem(atPath: directory)
        for suffix in [".settings", ".initdb.log"] { try? FileManager.default.removeItem(atPath: directory + suffix) }
    }

    /// Runs a command to its end; a failure carries what it printed on stderr. With posix_spawn
    /// and waitpid, not Foundation's Process: its exit watch missed `scripts/postgres` exiting
    /// (the child stayed a zombie and `isRunning` true), perhaps as the server it starts lives on.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let outputs = FileManager.default.temporaryDirectory.appendingPathComponent("courier-run-\(UUID().uuidString)").path
        defer { for suffix in [".out", ".err"] { unlink(outputs + suffix) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputs + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, outputs + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else { throw Failure(command: executable, status: spawned, stderr: String(cString: strerror(spawned))) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let out = (try? String(contentsOfFile: outputs + ".out", encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: outputs + ".err", encoding: .utf8)) ?? ""
        // Exited normally with 0: the low 7 bits hold a signal number, the next 8 the exit code.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            throw Failure(command: ([executable] + arguments).joined(separator: " "), status: status, stderr: err)
        }
        return out
    }

    public struct Failure: Error, CustomStringConvertible {
        public var command: String
        public var status: Int32
        public var stderr: String
        public var description: String { "\(command) exited with \(status): \(stderr)" }
    }
}
