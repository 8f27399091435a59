import Foundation
import XCTest

/// How hard the reliability suite pushes: `short` in `scripts/test`, `full` from
/// `scripts/reliability`, `soak` from `scripts/reliability --soak` (`COURIER_RELIABILITY`).
enum ReliabilityLevel: String {
    case short, full, soak

    static var current: ReliabilityLevel {
        ProcessInfo.processInfo.environment["COURIER_RELIABILITY"].flatMap(ReliabilityLevel.init(rawValue:)) ?? .short
    }

    func pick<T>(short: T, full: T, soak: T) -> T {
        switch self {
        case .short: short
        case .full: full
        case .soak: soak
        }
    }
}

/// A test of the reliability suite. It names the fault it puts on the system and the figure it
/// measured; when it ends, its row (test, fault, figure, result) is appended as one JSON line to
/// the file `COURIER_RELIABILITY_ROWS` names, which `scripts/reliability` prints as one table.
class ReliabilityTestCase: XCTestCase {
    /// The fault this test injects, in a few words.
    var fault = ""
    /// What it measured, set as soon as it is known so a failing test still shows it.
    var figure = ""

    var level: ReliabilityLevel { .current }

    override func tearDown() {
        let run = testRun
        let result = (run?.totalFailureCount ?? 0) > 0 ? "FAIL" : (run?.hasBeenSkipped == true ? "skip" : "pass")
        // "Class.test" on Linux, "-[Class test]" elsewhere.
        let test = name.trimmingCharacters(in: CharacterSet(charactersIn: "-[]")).replacingOccurrences(of: " ", with: ".")
        ReliabilityRows.append(test: test, fault: fault, figure: figure, result: result)
        super.tearDown()
    }
}

enum ReliabilityRows {
    /// Appends one row; a no-op unless `COURIER_RELIABILITY_ROWS` names a file.
    static func append(test: String, fault: String, figure: String, result: String) {
        guard let path = ProcessInfo.processInfo.environment["COURIER_RELIABILITY_ROWS"], !path.isEmpty,
              var line = try? JSONSerialization.data(withJSONObject: ["test": test, "fault": fault, "figure": figure, "result": result], options: [.sortedKeys])
        else { return }
        line.append(0x0A)
        // O_APPEND: one write per row, so rows from concurrent writers never interleave.
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        _ = line.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    }
}
