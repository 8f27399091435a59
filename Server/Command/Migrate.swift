import ArgumentParser
import CourierPostgres
import Foundation
import Logging

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade a cluster's PostgreSQL schema.",
        discussion: """
            Applies each schema version the database lacks, once, in order (several nodes may run \
            it at once: they take turns). A node refuses to start on a schema older or newer than \
            its own, so run this after installing a new courier-server and before starting it.
            """
    )

    @Option(help: "The cluster's PostgreSQL, postgres://USER:PASSWORD@HOST:PORT/DATABASE (default: $COURIER_POSTGRES).")
    var postgres: String?

    func run() async throws {
        guard let url = postgres ?? ProcessInfo.processInfo.environment["COURIER_POSTGRES"], !url.isEmpty else {
            throw ValidationError("migrate needs --postgres URL (or COURIER_POSTGRES)")
        }
        let storage = try await PostgresStorage.open(url: PostgresURL(url), migrate: true, maximumConnections: 1, logger: Logger(label: "courier-server"))
        defer { storage.close() }
        let applied = try await storage.appliedMigrations()
        print("\(storage.url): schema version \(applied.count) (\(applied.last ?? "none"))")
    }
}
