import CourierCore
import Foundation
import NIOSSL
import PostgresNIO

/// Where a cluster's PostgreSQL is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE]`
/// (also `postgresql://`). MODE is `disable`, `prefer` (the default, as with libpq) or
/// `require`. The password may be percent-encoded; it never appears in `description`.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable {
        case disable, prefer, require
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var tlsMode: TLSMode

    /// Parses `text`; a malformed URL is `.invalid` with what is wrong in it.
    public init(_ text: String) throws(StorageError) {
        func invalid(_ why: String) -> StorageError { .invalid("PostgreSQL URL: \(why) (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE)") }
        guard let components = URLComponents(string: text) else { throw invalid("not a URL") }
        guard components.scheme == "postgres" || components.scheme == "postgresql" else {
            throw invalid("the scheme must be postgres:// or postgresql://")
        }
        guard let host = components.host, !host.isEmpty else { throw invalid("no host") }
        guard let username = components.user, !username.isEmpty else { throw invalid("no user name") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw invalid("no database name after the host") }
        if let port = components.port, !(1...65_535).contains(port) { throw invalid("port \(port) is out of range") }
        var tlsMode = TLSMode.prefer
        for item in components.queryItems ?? [] {
            guard item.name == "sslmode" else { throw invalid("unknown parameter \(item.name)") }
            guard let mode = item.value.flatMap(TLSMode.init(rawValue:)) else {
                throw invalid("sslmode is disable, prefer or require")
            }
            tlsMode = mode
        }
        self.host = host
        self.port = components.port ?? 5432
        self.username = components.user?.removingPercentEncoding ?? username
        self.password = components.password?.removingPercentEncoding
        self.database = database.removingPercentEncoding ?? database
        self.tlsMode = tlsMode
    }

    /// The URL without its password, for logs and error messages.
    public var description: String { "postgres://\(username)@\(host):\(port)/\(database)" }

    func clientConfiguration(maximumConnections: Int) -> PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(host: host, port: port, username: username, password: password, database: database, tls: clientTLS)
        configuration.options.maximumConnections = maximumConnections
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.additionalStartupParameters = Self.sessionSettings
        return configuration
    }

    private var clientTLS: PostgresClient.Configuration.TLS {
        switch tlsMode {
        case .disable: .disable
        case .prefer: .prefer(.makeClientConfiguration())
        case .require: .require(.makeClientConfiguration())
        }
    }

    /// Set on every connection of a node. A node that stops in the middle of a transaction
    /// (SIGSTOP, a long pause) holds its chats' rows locked: after this long idle in it,
    /// PostgreSQL ends its session and rolls the transaction back, so the other nodes go on
    /// and whatever the stopped node tries after waking up fails (and is never acknowledged).
    /// Commits stay on: the node acknowledges only what is on PostgreSQL's disk.
    static let sessionSettings = [("idle_in_transaction_session_timeout", "5s"), ("synchronous_commit", "on")]

    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS = switch tlsMode {
        case .disable: .disable
        case .prefer: .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        var configuration = PostgresConnection.Configuration(host: host, port: port, username: username, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        return configuration
    }
}
