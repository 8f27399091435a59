import CourierCore
import Foundation
import NIOCore
import NIOSSL
import PostgresNIO

/// Where a cluster's PostgreSQL is: `postgres://USER[:PASSWORD]@HOST[:PORT][,HOST[:PORT]...]/DATABASE[?sslmode=MODE]`
/// (also `postgresql://`). Several hosts are the members of a replicated PostgreSQL (Patroni):
/// a node uses the one that is the primary, and moves when another becomes it, as libpq's
/// `target_session_attrs=read-write` would. MODE is `disable`, `prefer` (the default, as with
/// libpq) or `require`. The password may be percent-encoded; it never appears in `description`.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable {
        case disable, prefer, require
    }

    /// One server's address.
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public var description: String { "\(host):\(port)" }
    }

    /// Every member, in the order given; at least one.
    public var endpoints: [Endpoint]
    public var username: String
    public var password: String?
    public var database: String
    public var tlsMode: TLSMode

    /// The first member's address (the only one of a single server).
    public var host: String { endpoints[0].host }
    public var port: Int { endpoints[0].port }

    /// Parses `text`; a malformed URL is `.invalid` with what is wrong in it.
    public init(_ text: String) throws(StorageError) {
        func invalid(_ why: String) -> StorageError { .invalid("PostgreSQL URL: \(why) (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE)") }
        // URLComponents takes one host: the others are cut out of the authority first, and
        // parsed one by one in its place.
        guard let schemeEnd = text.range(of: "://") else { throw invalid("not a URL") }
        let afterScheme = text[schemeEnd.upperBound...]
        let authorityEnd = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
        let authority = afterScheme[..<authorityEnd]
        let userInfoEnd = authority.lastIndex(of: "@")
        let userInfo = userInfoEnd.map { authority[..<$0] + "@" } ?? ""
        let hostList = userInfoEnd.map { authority[authority.index(after: $0)...] } ?? authority
        var endpoints: [Endpoint] = []
        var first: URLComponents?
        for hostPort in hostList.split(separator: ",", omittingEmptySubsequences: false) {
            guard let components = URLComponents(string: text[..<schemeEnd.upperBound] + userInfo + hostPort + afterScheme[authorityEnd...]) else {
                throw invalid("not a URL")
            }
            guard let host = components.host, !host.isEmpty else { throw invalid("no host") }
            if let port = components.port, !(1...65_535).contains(port) { throw invalid("port \(port) is out of range") }
            endpoints.append(Endpoint(host: host, port: components.port ?? 5432))
            if first == nil { first = components }
        }
        guard let components = first else { throw invalid("no host") }
        guard Set(endpoints).count == endpoints.count else { throw invalid("a host is named twice") }
        guard components.scheme == "postgres" || components.scheme == "postgresql" else {
            throw invalid("the scheme must be postgres:// or postgresql://")
        }
        guard let username = components.user, !username.isEmpty else { throw invalid("no user name") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw invalid("no database name after the host") }
        var tlsMode = TLSMode.prefer
        for item in components.queryItems ?? [] {
            guard item.name == "sslmode" else { throw invalid("unknown parameter \(item.name)") }
            guard let mode = item.value.flatMap(TLSMode.init(rawValue:)) else {
                throw invalid("sslmode is disable, prefer or require")
            }
            tlsMode = mode
        }
        self.endpoints = endpoints
        self.username = components.user?.removingPercentEncoding ?? username
        self.password = components.password?.removingPercentEncoding
        self.database = database.removingPercentEncoding ?? database
        self.tlsMode = tlsMode
    }

    /// The URL without its password, for logs and error messages.
    public var description: String { "postgres://\(username)@\(endpoints.map(\.description).joined(separator: ","))/\(database)" }

    func clientConfiguration(_ endpoint: Endpoint, maximumConnections: Int) -> PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(
            host: endpoint.host, port: endpoint.port, username: username, password: password, database: database, tls: clientTLS
        )
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

    func connectionConfiguration(_ endpoint: Endpoint, connectTimeout: TimeAmount = .seconds(5)) throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS = switch tlsMode {
        case .disable: .disable
        case .prefer: .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        var configuration = PostgresConnection.Configuration(host: endpoint.host, port: endpoint.port, username: username, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = connectTimeout
        return configuration
    }
}
