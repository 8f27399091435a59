import CourierCore
import Foundation
import Logging
import NIOCore
import PostgresNIO

/// The cluster store: every node of a cluster keeps its users, chats, messages and cursors in one
/// PostgreSQL, through a pool of connections. The same protocol and the same tests as the
/// embedded SQLite store; the SQL differs only where the databases do (identity columns,
/// `FOR UPDATE`, full-text search with `tsvector`).
///
/// A commit is durable when PostgreSQL says so: every connection sets `synchronous_commit` on
/// (`PostgresURL.sessionSettings`), whatever the server's default, so a transaction that
/// returned is on the server's disk.
public final class PostgresStorage: ServerStorage {
    public let url: PostgresURL
    let client: PostgresClient
    let logger: Logger
    private let running: Task<Void, Never>

    /// Opens a pool on `url` after one connection proved that the server is there, takes these
    /// credentials and has the database: each of those failures is a `StorageError` that says
    /// which. With `migrate`, creates or upgrades the schema; without, refuses a schema that is
    /// missing, older or newer than this program's (`.invalid`, naming the command to run).
    public static func open(url: PostgresURL, migrate: Bool, maximumConnections: Int = 16, logger: Logger) async throws(StorageError) -> PostgresStorage {
        try await probe(url, logger: logger)
        let storage = PostgresStorage(url: url, maximumConnections: maximumConnections, logger: logger)
        do {
            if migrate { try await storage.migrate() } else { try await storage.checkSchema() }
        } catch {
            storage.close()
            throw error
        }
        return storage
    }

    private init(url: PostgresURL, maximumConnections: Int, logger: Logger) {
        self.url = url
        self.logger = logger
        let client = PostgresClient(configuration: url.clientConfiguration(maximumConnections: maximumConnections), backgroundLogger: logger)
        self.client = client
        running = Task { await client.run() }
    }

    /// Closes the pool; queries after this fail.
    public func close() {
        running.cancel()
    }

    deinit {
        running.cancel()
    }

    /// One connection, opened and closed, so that a wrong URL fails at once with what is wrong
    /// (a pool would retry in the background and leave the caller waiting).
    private static func probe(_ url: PostgresURL, logger: Logger) async throws(StorageError) {
        do {
            let connection = try await PostgresConnection.connect(configuration: try url.connectionConfiguration(), id: 0, logger: logger)
            try? await connection.close()
        } catch {
            throw connectionError(error, url: url)
        }
    }

    // MARK: - Plumbing

    /// Runs `body` in a transaction on one connection of the pool: committed when it returns,
    /// rolled back when it throws. A StorageError thrown by `body` comes out as it is.
    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws(StorageError) -> T {
        do {
            return try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: logger)
                let value: T
                do {
                    value = try await body(connection)
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
                try await connection.query("COMMIT", logger: logger)
                return value
            }
        } catch {
            throw Self.storageError(error)
        }
    }

    /// Every row of one statement, outside a transaction, decoded as `columns`.
    func readAll<each Column: PostgresDecodable & Sendable>(_ query: PostgresQuery, as columns: (repeat each Column).Type) async throws(StorageError) -> [(repeat each Column)] {
        do {
            let rows = try await client.query(query, logger: logger)
            var values: [(repeat each Column)] = []
            for try await row in rows.decode(columns) { values.append(row) }
            return values
        } catch {
            throw Self.storageError(error)
        }
    }

    /// The first row's single column, or nil when there is no row.
    func readOne<T: PostgresDecodable & Sendable>(_ query: PostgresQuery, as type: T.Type) async throws(StorageError) -> T? {
        try await readAll(query, as: (T).self).first
    }

    static func storageError(_ error: any Error) -> StorageError {
        if let error = error as? StorageError { return error }
        if let error = error as? PSQLError {
            let message = error.serverInfo?[.message] ?? "\(error.code)"
            switch error.serverInfo?[.sqlState] {
            case "53100"?: return .full("PostgreSQL: \(message)")
            case let state? where state.hasPrefix("23"): return .rejected("PostgreSQL: \(message)")
            case let state? where state.hasPrefix("22"): return .invalid("PostgreSQL: \(message)")
            default: return .unavailable("PostgreSQL: \(message)\(error.underlying.map { " (\($0))" } ?? "")")
            }
        }
        return .unavailable("PostgreSQL: \(error)")
    }

    /// What failed when connecting: the address, the credentials or the database.
    static func connectionError(_ error: any Error, url: PostgresURL) -> StorageError {
        guard let error = error as? PSQLError else { return .unavailable("cannot reach PostgreSQL at \(url.host):\(url.port): \(error)") }
        switch error.serverInfo?[.sqlState] {
        case "28P01"?, "28000"?:
            return .invalid("PostgreSQL at \(url.host):\(url.port) refused the credentials of user \(url.username): \(error.serverInfo?[.message] ?? "authentication failed")")
        case "3D000"?:
            return .invalid("PostgreSQL at \(url.host):\(url.port) has no database \(url.database)")
        case let state?:
            return .unavailable("PostgreSQL at \(url.host):\(url.port) refused the connection (\(state)): \(error.serverInfo?[.message] ?? "")")
        case nil:
            let cause = error.underlying.map { "\($0)" } ?? "\(error.code)"
            return .unavailable("cannot reach PostgreSQL at \(url.host):\(url.port): \(cause)")
        }
    }

    /// True when `error` is a unique or foreign-key violation (what an INSERT of a taken name raises).
    static func isUniqueViolation(_ error: any Error) -> Bool {
        (error as? PSQLError)?.serverInfo?[.sqlState] == "23505"
    }
}

extension UInt64 {
    /// A database id: ids from requests may be anything, the columns are BIGINT.
    var database: Int64 { Int64(clamping: self) }
}

extension Int64 {
    var id: UInt64 { UInt64(clamping: self) }
}
