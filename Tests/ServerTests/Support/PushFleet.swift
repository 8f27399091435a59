import CourierCore
import Foundation
import TestSupport
import XCTest

/// A fleet of push-session devices on Python's websockets (Peers/push_fleet.py): each device
/// holds its chats' messages in order, acknowledges, heartbeats, reconnects with what it holds,
/// and (at a seeded random rate) drops its session. `finish` says what every device must end
/// with and returns what each one holds.
final class PushFleet: @unchecked Sendable {
    // @unchecked: used by one test, one step at a time.
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Peers/push_fleet.py").path
    static let protoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Shared/Proto").path

    struct Message: Equatable, CustomStringConvertible {
        var sequence: UInt64
        var serverMessageID: UInt64
        var clientMessageID: String
        var text: String
        var description: String { "#\(sequence) \(clientMessageID)" }
    }

    struct Device {
        var chats: [UInt64: [Message]]
        var duplicates: Int
        var gaps: [[UInt64]]
        var sessions: Int
        /// (chat, sequence, server message id, client message id)
        var receipts: [(UInt64, UInt64, UInt64, String)]
        var errors: [String]
        var closes: [(Int, String)]
    }

    struct Result {
        var timedOut: Bool
        var devices: [String: Device]
    }

    private let process: Process
    private let input: Pipe
    private let outputPath: String
    private let errorPath: String

    init(pushPort: Int, devices: [(name: String, token: String)], seed: UInt64, disconnectRate: Double, finishTimeout: Int = 60) throws {
        let python = try ExternalProgram.locate("python3", hint: "apt-get install python3")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-fleet-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let devicesPath = directory.appendingPathComponent("devices.json").path
        let list = devices.map { ["name": $0.name, "token": $0.token] }
        try JSONSerialization.data(withJSONObject: list).write(to: URL(fileURLWithPath: devicesPath))
        outputPath = directory.appendingPathComponent("stdout").path
        errorPath = directory.appendingPathComponent("stderr").path
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)

        process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [
            Self.script, "--url", "ws://127.0.0.1:\(pushPort)/v1/push", "--proto-root", Self.protoRoot,
            "--devices", devicesPath, "--seed", "\(seed)", "--disconnect-rate", "\(disconnectRate)", "--finish-timeout", "\(finishTimeout)",
        ]
        input = Pipe()
        process.standardInput = input
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        try process.run()
    }

    var errorText: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
    private var outputLines: [String] {
        ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Returns once every device has opened its first session.
    func waitUntilReady(timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while outputLines.first != "ready" {
            guard process.isRunning else { throw ServerTestError("push_fleet.py exited: \(errorText.suffix(3000))") }
            if Date() > deadline { throw ServerTestError("push_fleet.py not ready within \(timeout) s: \(errorText.suffix(3000))") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Tells every device what it must end with (device -> chat -> last sequence), waits for
    /// the fleet to get there (or give up), and returns what each device holds.
    func finish(_ expected: [String: [UInt64: UInt64]], timeout: Double = 120) async throws -> Result {
        let json = Dictionary(uniqueKeysWithValues: expected.map { device, chats in
            (device, Dictionary(uniqueKeysWithValues: chats.map { (String($0.key), $0.value) }))
        })
        let line = "finish " + String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self) + "\n"
        try input.fileHandleForWriting.write(contentsOf: Data(line.utf8))
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline {
                stop()
                throw ServerTestError("push_fleet.py did not finish within \(timeout) s: \(errorText.suffix(3000))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard process.terminationStatus == 0, outputLines.count >= 2 else {
            throw ServerTestError("push_fleet.py failed (\(process.terminationStatus)): \(errorText.suffix(3000))")
        }
        return try Self.parse(outputLines[1])
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    private static func parse(_ line: String) throws -> Result {
        guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let devices = object["devices"] as? [String: [String: Any]] else { throw ServerTestError("unreadable fleet result: \(line.prefix(500))") }
        func number(_ value: Any?) -> UInt64 { (value as? NSNumber)?.uint64Value ?? 0 }
        var result = Result(timedOut: object["timed_out"] as? Bool ?? true, devices: [:])
        for (name, device) in devices {
            var chats: [UInt64: [Message]] = [:]
            for (chat, messages) in device["chats"] as? [String: [[Any]]] ?? [:] {
                chats[UInt64(chat) ?? 0] = messages.map {
                    Message(sequence: number($0[0]), serverMessageID: number($0[1]), clientMessageID: $0[2] as? String ?? "", text: $0[3] as? String ?? "")
                }
            }
            result.devices[name] = Device(
                chats: chats,
                duplicates: (device["duplicates"] as? NSNumber)?.intValue ?? 0,
                gaps: (device["gaps"] as? [[Any]] ?? []).map { $0.map(number) },
                sessions: (device["sessions"] as? NSNumber)?.intValue ?? 0,
                receipts: (device["receipts"] as? [[Any]] ?? []).map { (number($0[0]), number($0[1]), number($0[2]), $0[3] as? String ?? "") },
                errors: device["errors"] as? [String] ?? [],
                closes: (device["closes"] as? [[Any]] ?? []).map { (($0[0] as? NSNumber)?.intValue ?? 0, $0[1] as? String ?? "") }
            )
        }
        return result
    }
}
