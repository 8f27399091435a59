import Foundation
import NIOConcurrencyHelpers
import TestSupport
import XCTest

/// Several times what the server can take: it answers 5.03 with Max-Age rather than queueing
/// without bound, its memory stays under a stated bound, and once the load drops every
/// acknowledged message is delivered.
final class OverloadReliabilityTests: ReliabilityTestCase {
    /// Stated bound on the server's resident memory under this overload (a debug build).
    static let residentBoundMiB = 400

    func testOverloadGets503WithMaxAgeBoundedMemoryAndEverythingAcknowledgedIsDelivered() async throws {
        let seconds = level.pick(short: 10, full: 30, soak: 120)
        // 100 devices × 16 lanes at 20 msgs/s each offer up to 2,000 msgs/s; bounds small
        // enough that this is several times what they admit at once.
        let settings: [String: Any] = ["maxConcurrentRequests": 48, "maxPendingMessages": 2_000]
        fault = "100 devices × 16 in flight at 20 msgs/s each; server admits 48 requests per socket, 2,000 pending"
        try await withServer { server in
            await server.kill9()
            try await server.start(["--config", try server.configFile(settings)])
            let idle = server.residentKiB() ?? 0
            let peak = NIOLockedValueBox(0)
            let sampler = Task {
                while !Task.isCancelled {
                    if let now = server.residentKiB() { peak.withLockedValue { $0 = max($0, now) } }
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
            let run = try await Simulator.run(server, [
                "--users", "50", "--devices-per-user", "2", "--members", "4", "--rate", "20", "--window", "16",
                "--duration", "\(seconds)", "--ramp-up", "1", "--drain-timeout", "240", "--settle-timeout", "240",
            ], timeout: Double(seconds + 600))
            sampler.cancel()
            let peakMiB = peak.withLockedValue { $0 } / 1024
            let refused = run.answers("5.03")
            figure = "\(refused) × 5.03 (Max-Age), \(run.answers("2.01")) × 2.01; RSS \(idle / 1024) MiB idle, peak \(peakMiB) MiB (bound \(Self.residentBoundMiB)); \(run.verdictSummary)"
            XCTAssertGreaterThan(refused, 0, "overload is answered with 5.03\n\(run.table)")
            XCTAssertLessThan(peakMiB, Self.residentBoundMiB, "resident memory stays bounded")
            XCTAssertEqual(run.status, 0, run.table)
            XCTAssertEqual(run.verdictCount("lost"), 0, run.table)
            XCTAssertEqual(run.verdictCount("duplicates"), 0, run.table)
            XCTAssertEqual(run.verdictCount("order_violations"), 0, run.table)
            XCTAssertEqual(run.verdictCount("delivered"), run.verdictCount("expected_deliveries"), "every acknowledged message delivered once the load dropped")
            XCTAssertGreaterThan(run.verdictCount("acknowledged"), 100, run.table)
        }
    }
}
