import CourierCore
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization

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
    let logger: Logger
    private let maximumConnections: Int

    /// The pool on the current primary. Replaced (never mutated) when another member of a
    /// replicated PostgreSQL becomes the primary.
    private struct Pool {
        var client: PostgresClient
        var running: Task<Void, Never>
        var endpoint: PostgresURL.Endpoint
        /// 1 for the first pool, then one more per move to another primary.
        var generation: Int
    }

    private struct State {
        var pool: Pool
        var closed = false
        /// The primary watch (several members) and the sweep of overdue queries.
        var watching: [Task<Void, Never>] = []
        /// Queries waited for, by id: since when, on which pool, and how to stop waiting.
        var waiting: [UInt64: (since: ContinuousClock.Instant, generation: Int, giveUp: @Sendable (GivenUp) -> Void)] = [:]
        /// Queries no longer waited for, by id: when each was given up and on which pool, until
        /// it answers or `abandonedForgetAfter` passes.
        var abandoned: [UInt64: (since: ContinuousClock.Instant, generation: Int)] = [:]
        var nextQueryID: UInt64 = 0
    }

    private let state: Mutex<State>

    /// The pool's client: queries go to the current primary.
    var client: PostgresClient { state.withLock { $0.pool.client } }

    /// The member in use now, and how many times the node has moved to another one.
    public var primary: (endpoint: PostgresURL.Endpoint, generation: Int) { state.withLock { ($0.pool.endpoint, $0.pool.generation) } }

    /// A replicated PostgreSQL is checked this often: a primary that stopped answering, or
    /// became a standby, is replaced by the member that is the primary now.
    static let primaryCheckInterval: Duration = .seconds(1)
    /// A primary that does not answer the check within this long is looked for again.
    static let primaryCheckTimeout: Duration = .seconds(2)
    /// A pool left behind by a move is closed after this long, and its queries still waiting
    /// are given up (on a member cut off from the network they would hang for minutes, holding
    /// a device's pump or the news), while the server goes on with what it runs: closing a
    /// connection does not cancel a commit waiting for the standby, PostgreSQL notices only
    /// when it answers.
    static let retiredPoolGrace: Duration = .seconds(2)

    /// A query is waited for at most this long, then left to finish by itself (never
    /// cancelled: a commit waiting for the standby must not be) while its caller goes on with a
    /// 5.03. A query can stay unanswered for good: after a kill -9 of the primary, some on
    /// connections that closed under them never answered (postgres-nio writes a query to its
    /// leased connection without a promise), and one held a node's group commit, which is
    /// serial, until this bound. Longer than a failover's wait for the standby.
    public static let defaultAnswerLimit: Duration = .seconds(20)
    let answerLimit: Duration
    /// At most this many given-up queries on the current pool at once (each may hold one of
    /// its connections); beyond, queries fail at once until some answer or the pool moves.
    public var maximumAbandoned: Int { max(2, maximumConnections / 2) }
    /// A given-up query that has not answered after this long is no longer counted: its answer
    /// was lost (it will never come), and its connection is closed by now.
    static let abandonedForgetAfter: Duration = .seconds(120)

    /// Opens a pool on `url` after one connection proved that the server is there, takes these
    /// credentials and has the database: each of those failures is a `StorageError` that says
    /// which. With several hosts, the pool goes to the one that is the primary. With `migrate`,
    /// creates or upgrades the schema; without, refuses a schema that is missing, older or newer
    /// than this program's (`.invalid`, naming the command to run).
    public static func open(url: PostgresURL, migrate: Bool, maximumConnections: Int = 16, answerLimit: Duration = defaultAnswerLimit, logger: Logger) async throws(StorageError) -> PostgresStorage {
        let primary = try await findPrimary(url, logger: logger)
        let storage = PostgresStorage(url: url, primary: primary, maximumConnections: maximumConnections, answerLimit: answerLimit, logger: logger)
        storage.watch(every: min(.seconds(1), answerLimit / 4)) { $0.giveUpOverdueQueries() }
        do {
            if migrate { try await storage.migrate() } else { try await storage.checkSchema() }
        } catch {
            storage.close()
            throw error
        }
        if url.endpoints.count > 1 { storage.watch(every: primaryCheckInterval) { await $0.checkPrimary() } }
        return storage
    }

    private init(url: PostgresURL, primary: PostgresURL.Endpoint, maximumConnections: Int, answerLimit: Duration, logger: Logger) {
        self.url = url
        self.answerLimit = answerLimit
        self.logger = logger
        self.maximumConnections = maximumConnections
        state = Mutex(State(pool: Self.pool(url, primary, maximumConnections: maximumConnections, generation: 1, logger: logger)))
    }

    private static func pool(_ url: PostgresURL, _ endpoint: PostgresURL.Endpoint, maximumConnections: Int, generation: Int, logger: Logger) -> Pool {
        let client = PostgresClient(configuration: url.clientConfiguration(endpoint, maximumConnections: maximumConnections), backgroundLogger: logger)
        return Pool(client: client, running: Task { await client.run() }, endpoint: endpoint, generation: generation)
    }

    /// Closes the pool; queries after this fail.
    public func close() {
        let (pool, watching) = state.withLock { state in
            state.closed = true
            return (state.pool, state.watching)
        }
        for task in watching { task.cancel() }
        pool.running.cancel()
    }

    deinit {
        let (pool, watching) = state.withLock { ($0.pool, $0.watching) }
        for task in watching { task.cancel() }
        pool.running.cancel()
    }

    /// The member that is the primary: the only one for a single server (after one connection,
    /// opened and closed, proved it is there, so that a wrong URL fails at once with what is
    /// wrong, where a pool would retry in the background and leave the caller waiting); of
    /// several, the first that answers and is not in recovery.
    private static func findPrimary(_ url: PostgresURL, logger: Logger) async throws(StorageError) -> PostgresURL.Endpoint {
        guard url.endpoints.count > 1 else {
            do {
                let connection = try await PostgresConnection.connect(configuration: try url.connectionConfiguration(url.endpoints[0]), id: 0, logger: logger)
                try? await connection.close()
                return url.endpoints[0]
            } catch {
                throw connectionError(error, url: url, endpoint: url.endpoints[0])
            }
        }
        var failures: [String] = []
        for endpoint in url.endpoints {
            // A member cut off from the network, or half started, may answer nothing at all:
            // each is given `primaryCheckTimeout`, connecting and asking included.
            let answer = await CourierCore.answer(within: primaryCheckTimeout, otherwise: Result<Bool, StorageError>.failure(.unavailable("\(endpoint) did not answer within \(primaryCheckTimeout)"))) {
                do {
                    let connection = try await PostgresConnection.connect(configuration: try url.connectionConfiguration(endpoint, connectTimeout: .seconds(2)), id: 0, logger: logger)
                    defer { Task { try? await connection.close() } }
                    var inRecovery = true
                    for try await value in try await connection.query("SELECT pg_is_in_recovery()", logger: logger).decode(Bool.self) { inRecovery = value }
                    return .success(!inRecovery)
                } catch {
                    return .failure(connectionError(error, url: url, endpoint: endpoint))
                }
            }
            switch answer {
            case .success(true):
                return endpoint
            case .success(false):
                failures.append("\(endpoint) is a standby")
            case .failure(let failure):
                // Wrong credentials or database are the same on every member: say so at once.
                if case .invalid = failure { throw failure }
                failures.append("\(failure)")
            }
        }
        throw .unavailable("no primary among the PostgreSQL members (\(failures.joined(separator: "; ")))")
    }

    /// Runs `check` every `interval` until closed: the primary check (`checkPrimary`) and the
    /// sweep of queries past `answerLimit`.
    private func watch(every interval: Duration, _ check: @escaping @Sendable (PostgresStorage) async -> Void) {
        let task = Task { [weak self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                guard let self else { return }
                await check(self)
            }
        }
        let closed = state.withLock { state -> Bool in
            state.watching.append(task)
            return state.closed
        }
        if closed { task.cancel() }
    }

    /// Moves the pool to the member that is the primary now if the current one does not answer
    /// within `primaryCheckTimeout` or is in recovery (Patroni demoted it). Until a member is
    /// the primary (a failover takes seconds), queries fail and sends are answered 5.03.
    func checkPrimary() async {
        let current = state.withLock { $0.pool }
        if await Self.isPrimary(current.client, within: Self.primaryCheckTimeout, logger: logger) { return }
        // The pool may only be busy (commits waiting for a standby hold its connections): ask the
        // current member first, on a connection of its own, before looking elsewhere.
        var members = url
        members.endpoints = [current.endpoint] + url.endpoints.filter { $0 != current.endpoint }
        let found: PostgresURL.Endpoint
        do {
            found = try await Self.findPrimary(members, logger: logger)
        } catch {
            logger.warning("PostgreSQL: no primary yet", metadata: ["error": "\(error)"])
            return
        }
        // The current primary came back, or a check elsewhere moved the pool already.
        guard found != current.endpoint else { return }
        let (moved, retired) = state.withLock { state -> (Pool?, Pool?) in
            guard !state.closed, state.pool.generation == current.generation else { return (nil, nil) }
            let retired = state.pool
            state.pool = Self.pool(url, found, maximumConnections: maximumConnections, generation: retired.generation + 1, logger: logger)
            return (state.pool, retired)
        }
        guard let moved, let retired else { return }
        logger.warning("PostgreSQL: the primary moved", metadata: ["from": "\(retired.endpoint)", "to": "\(moved.endpoint)", "generation": "\(moved.generation)"])
        Task {
            try? await Task.sleep(for: Self.retiredPoolGrace)
            retired.running.cancel()
            let given = giveUp(.primaryMoved) { _, generation in generation == retired.generation }
            if given > 0 { logger.warning("PostgreSQL: queries to the old primary no longer waited for", metadata: ["count": "\(given)", "generation": "\(retired.generation)"]) }
        }
    }

    /// Whether `client`'s server answers within `timeout` that it is not in recovery.
    private static func isPrimary(_ client: PostgresClient, within timeout: Duration, logger: Logger) async -> Bool {
        await CourierCore.answer(within: timeout, otherwise: false) {
            do {
                var primary = false
                for try await inRecovery in try await client.query("SELECT pg_is_in_recovery()", logger: logger).decode(Bool.self) { primary = !inRecovery }
                return primary
            } catch {
                return false
            }
        }
    }

    // MARK: - Plumbing

    /// Why a query was no longer waited for.
    enum GivenUp: Error {
        case limit
        case primaryMoved
    }

    /// `body`'s result, waited for at most `answerLimit` (see there; the sweep finds overdue
    /// queries), or until the pool it went to is retired (its member is no longer the primary:
    /// an answer from there is worth nothing, and may never come); then `.unavailable`, with
    /// `body` left to run. Every query of the store goes through here; the one task per query
    /// is what lets its caller go on without cancelling it.
    func bounded<T: Sendable>(_ what: @autoclosure () -> String, _ body: @escaping @Sendable () async throws(StorageError) -> T) async throws(StorageError) -> T {
        let started = ContinuousClock.now
        let first = FirstAnswer<Result<Result<T, StorageError>, GivenUp>>()
        let registered = state.withLock { state -> (id: UInt64, generation: Int)? in
            state.abandoned = state.abandoned.filter { started - $0.value.since < Self.abandonedForgetAfter }
            let generation = state.pool.generation
            guard state.abandoned.values.count(where: { $0.generation == generation }) < maximumAbandoned else { return nil }
            let id = state.nextQueryID
            state.nextQueryID += 1
            state.waiting[id] = (started, generation, { first.give(.failure($0)) })
            return (id, generation)
        }
        guard let (id, generation) = registered else {
            throw .unavailable("\(maximumAbandoned) queries to PostgreSQL are still unanswered after \(answerLimit)")
        }
        let answer = await withCheckedContinuation { continuation in
            first.waiting(continuation)
            Task { [weak self] in
                let result: Result<T, StorageError>
                do throws(StorageError) { result = .success(try await body()) } catch { result = .failure(error) }
                first.give(.success(result))
                self?.answered(id, ok: (try? result.get()) != nil)
            }
        }
        let reason: GivenUp
        switch answer {
        case .success(let result): return try result.get()
        case .failure(let givenUp): reason = givenUp
        }
        let description = what()
        // Still running (it may have answered just now: then it is gone from `waiting`). Counted
        // while it runs if given up at the limit; one sent to a retired pool does not count.
        let pending = state.withLock { state -> Bool in
            guard state.waiting.removeValue(forKey: id) != nil else { return false }
            if reason == .limit { state.abandoned[id] = (ContinuousClock.now, generation) }
            return true
        }
        switch reason {
        case .limit:
            if pending {
                logger.warning("PostgreSQL: no answer within the limit; the query is left to finish by itself", metadata: [
                    "query": "\(description)", "limit": "\(answerLimit)", "generation": "\(generation)",
                ])
            }
            throw .unavailable("no answer from PostgreSQL to \(description) within \(answerLimit)")
        case .primaryMoved:
            throw .unavailable("the primary moved while \(description) waited for an answer")
        }
    }

    /// Query `id` answered: it is no longer waited for, or no longer counted as given up.
    private func answered(_ id: UInt64, ok: Bool) {
        let since = state.withLock { state -> ContinuousClock.Instant? in
            state.waiting.removeValue(forKey: id)
            return state.abandoned.removeValue(forKey: id)?.since
        }
        if let since {
            logger.warning("PostgreSQL: a query given up on answered after all", metadata: ["after": "\(ContinuousClock.now - since)", "ok": "\(ok)"])
        }
    }

    /// Stops waiting for the queries `matching`, for `reason`; returns how many.
    private func giveUp(_ reason: GivenUp, matching: (_ since: ContinuousClock.Instant, _ generation: Int) -> Bool) -> Int {
        let giveUps = state.withLock { state in state.waiting.values.filter { matching($0.since, $0.generation) }.map(\.giveUp) }
        for giveUp in giveUps { giveUp(reason) }
        return giveUps.count
    }

    /// Stops waiting for the queries older than `answerLimit`.
    private func giveUpOverdueQueries() {
        let now = ContinuousClock.now
        _ = giveUp(.limit) { since, _ in now - since >= answerLimit }
    }

    /// Runs `body` in a transaction on one connection of the pool: committed when it returns,
    /// rolled back when it throws. A StorageError thrown by `body` comes out as it is.
    /// Waited for at most `answerLimit`, unless `unbounded`.
    func transaction<T: Sendable>(unbounded: Bool = false, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws(StorageError) -> T {
        let run: @Sendable () async throws(StorageError) -> T = { [client, logger] () async throws(StorageError) -> T in
            do {
                return try await Self.transaction(on: client, logger: logger, body)
            } catch {
                throw Self.storageError(error)
            }
        }
        return unbounded ? try await run() : try await bounded("a transaction", run)
    }

    private static func transaction<T: Sendable>(on client: PostgresClient, logger: Logger, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
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
        }
    }

    /// Every row of one statement, outside a transaction, decoded as `columns`.
    func readAll<each Column: PostgresDecodable & Sendable>(_ query: PostgresQuery, as columns: (repeat each Column).Type) async throws(StorageError) -> [(repeat each Column)] {
        try await bounded(String(query.sql.prefix(60))) { [client, logger] () async throws(StorageError) -> [(repeat each Column)] in
            do {
                let rows = try await client.query(query, logger: logger)
                var values: [(repeat each Column)] = []
                for try await row in rows.decode(columns) { values.append(row) }
                return values
            } catch {
                throw Self.storageError(error)
            }
        }
    }

    /// Every row of one statement that writes, decoded as `columns`, returned only once its
    /// transaction has committed. Not `readAll`: a statement on its own commits at the Sync
    /// after it, but postgres-nio ends its rows at CommandComplete, which a backend sends before
    /// that commit whenever it flushes early: a backend stopped by `pg_ctl stop -m immediate`
    /// flushes its buffered rows and CommandComplete with its last warning, and dies before the
    /// commit. COMMIT's own CommandComplete comes only after the commit.
    func writeAll<each Column: PostgresDecodable & Sendable>(_ query: PostgresQuery, as columns: (repeat each Column).Type) async throws(StorageError) -> [(repeat each Column)] {
        try await transaction { [logger] connection in
            var values: [(repeat each Column)] = []
            for try await row in try await connection.query(query, logger: logger).decode(columns) { values.append(row) }
            return values
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

    /// What failed when connecting to `endpoint`: the address, the credentials or the database.
    static func connectionError(_ error: any Error, url: PostgresURL, endpoint: PostgresURL.Endpoint) -> StorageError {
        guard let error = error as? PSQLError else { return .unavailable("cannot reach PostgreSQL at \(endpoint): \(error)") }
        switch error.serverInfo?[.sqlState] {
        case "28P01"?, "28000"?:
            return .invalid("PostgreSQL at \(endpoint) refused the credentials of user \(url.username): \(error.serverInfo?[.message] ?? "authentication failed")")
        case "3D000"?:
            return .invalid("PostgreSQL at \(endpoint) has no database \(url.database)")
        case let state?:
            return .unavailable("PostgreSQL at \(endpoint) refused the connection (\(state)): \(error.serverInfo?[.message] ?? "")")
        case nil:
            let cause = error.underlying.map { "\($0)" } ?? "\(error.code)"
            return .unavailable("cannot reach PostgreSQL at \(endpoint): \(cause)")
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
