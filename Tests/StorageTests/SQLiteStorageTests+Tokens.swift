import CourierCore
@testable import CourierSQLite
import Foundation
import GRDB
import XCTest

extension SQLiteStorageTests {
    /// The token checker polls the revocations once a second on every server: the poll reads
    /// only revoked rows, through their partial index, not every device's token.
    func testThePollOfRevokedTokensReadsOnlyRevokedRowsThroughTheirIndex() throws {
        let plan = try DatabaseQueue(path: path).read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN \(SQLiteStorage.tokensRevokedSQL)", arguments: [0]).map { $0["detail"] as String }
        }
        XCTAssertTrue(plan.contains { $0.contains("USING INDEX tokens_revoked") }, "\(plan)")
    }
}
