import CourierSimulator
import XCTest

final class VerdictTests: XCTestCase {
    func testAnyLossDuplicateOrReorderFailsTheVerdict() {
        let clean = SimulationReport.Verdict(acknowledged: 3, expectedDeliveries: 6, delivered: 6, lost: 0, duplicates: 0, orderViolations: 0, unacknowledged: 1, examples: [])
        XCTAssertTrue(clean.passed)
        for broken in [\SimulationReport.Verdict.lost, \.duplicates, \.orderViolations] {
            var verdict = clean
            verdict[keyPath: broken] = 1
            XCTAssertFalse(verdict.passed)
        }
    }
}
