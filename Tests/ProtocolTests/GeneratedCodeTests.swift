import Foundation
import XCTest

/// The committed code in Shared/Protocol/Generated matches the schema in Shared/Proto.
final class GeneratedCodeTests: XCTestCase {
    func testGeneratedCodeIsNotStale() throws {
        guard Self.isOnPath("protoc") else {
            // Not a skip: CI installs protoc, so a missing one means this check silently stopped running.
            return XCTFail(
                "protoc is not installed, so the generated code cannot be checked: "
                    + "install Debian's protobuf-compiler (apt-get install protobuf-compiler)"
            )
        }
        // Tests/ProtocolTests/GeneratedCodeTests.swift -> the package root.
        let root = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()
            .deletingLastPathComponent()
            .deletingLastPathComponent()
        let process = Process()
        // The script builds protoc-gen-swift under .build-protoc only, so it never waits on the lock
        // that `swift test` holds on its own build folder.
        process.executableURL = root.appendingPathComponent("scripts/gen-proto")
        process.arguments = ["--check"]
        process.currentDirectoryURL = root
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        // Read before waiting: a full pipe would otherwise block the script forever.
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(
            process.terminationStatus,
            0,
            "scripts/gen-proto --check failed (exit \(process.terminationStatus)):\n\(text)"
        )
    }

    private static func isOnPath(_ name: String) -> Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").contains { directory in
            FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)")
        }
    }
}
