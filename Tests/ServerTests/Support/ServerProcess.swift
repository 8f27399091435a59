import CoAP
import CourierProtocol
import Foundation
import NIOCore
import TestSupport
import XCTest

/// A real `courier-server` process on loopback ports of its own, with its own data directory.
/// Tests provision it through the admin subcommands, as an admin would, and talk CoAP to it.
final class ServerProcess: @unchecked Sendable {
    // @unchecked: `process` is touched only by the test that owns this server, one step at a time.
    let dataDirectory: String
    let coapPort: Int
    let httpPort: Int
    let pushPort: Int
    private var process: Process?
    private(set) var logPath: String
    /// A cluster node's PostgreSQL: `start` serves on it, and the admin subcommands use it.
    var postgres: String?

    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("courier-server").path
    }

    /// A server with a fresh data directory of its own, or in `dataDirectory` (e.g. on a small
    /// filesystem; its log then goes to the temporary directory, so a full disk keeps it).
    init(dataDirectory given: String? = nil) async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw ExternalProgram.Failure.notInstalled(Self.binary, hint: "build with `swift build --build-tests` (scripts/test does)")
        }
        let temporary = FileManager.default.temporaryDirectory
        dataDirectory = given ?? temporary.appendingPathComponent("courier-server-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        coapPort = try await freeUDPPort()
        httpPort = try await freeTCPPort()
        pushPort = try await freeTCPPort()
        logPath = given == nil ? "\(dataDirectory)/server.log" : temporary.appendingPathComponent("courier-server-\(UUID().uuidString).log").path
    }

    var peer: SocketAddress { try! SocketAddress(ipAddress: "127.0.0.1", port: coapPort) }
    var uri: String { "coap://127.0.0.1:\(coapPort)" }

    /// Starts the server and returns once its gateway answers (it binds only when ready).
    func start(_ extraArguments: [String] = []) async throws {
        let process = Process()
        // Through a launcher that unblocks SIGTERM and SIGINT: children of this test process
        // inherit them blocked, and graceful shutdown is part of what is tested.
        process.executableURL = URL(fileURLWithPath: try ExternalProgram.locate("python3", hint: "apt-get install python3"))
        process.arguments = [
            "-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT]); os.execv(sys.argv[1], sys.argv[1:])",
            Self.binary,
            "serve", "--data-dir", dataDirectory, "--bind", "127.0.0.1", "--coap-port", "\(coapPort)",
            "--http-bind", "127.0.0.1", "--http-port", "\(httpPort)", "--push-port", "\(pushPort)", "--log-level", "info",
        ] + (postgres.map { ["--postgres", $0] } ?? []) + extraArguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardError = log
        try process.run()
        self.process = process
        let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
        defer { Task { await client.close() } }
        let deadline = Date().addingTimeInterval(30)
        // Without a clear-text port, the operations listener says when the gateway serves.
        let clearText = !extraArguments.contains("--require-secure")
        while true {
            guard process.isRunning else { throw ServerTestError("courier-server exited at start: \(serverLog())") }
            if clearText {
                if let response = try? await Self.withTimeout(.milliseconds(300), { try await client.exchange(.request(.get, path: "/v1/health"), with: self.peer) }),
                   response.code == .content { return }
            } else if (try? await http("/ready"))?.status == 200 {
                return
            }
            if Date() > deadline { throw ServerTestError("courier-server did not answer within 30 s: \(serverLog())") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// kill -9: no shutdown of any kind.
    func kill9() async {
        guard let process else { return }
        await ExternalProgram.stop(process)
        self.process = nil
    }

    var isRunning: Bool { process?.isRunning ?? false }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the running server.
    func signal(_ signal: Int32) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// Waits for the server to exit by itself (a test fault that kills it); false on timeout.
    func waitForExit(timeout: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning {
            if Date() > deadline { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
        process = nil
        return true
    }

    /// The server's peak resident memory in KiB (VmHWM), nil when it is not running.
    func peakResidentKiB() -> Int? {
        guard let pid = process?.processIdentifier,
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }

    /// Writes a JSON configuration file (settings by name) to the temporary directory; pass
    /// `["--config", path]` to `start` or `withServer`.
    static func configFile(_ settings: [String: Any]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("courier-config-\(UUID().uuidString).json").path
        try JSONSerialization.data(withJSONObject: settings).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Settings for a test whose one device sends far past the per-device rate (4.29 otherwise).
    static var unlimitedDeviceRate: [String: Any] { ["deviceRatePerSecond": 1_000_000, "deviceBurst": 1_000_000] }

    /// The scheduling policy of each of the server's threads (field 41 of
    /// /proc/PID/task/TID/stat: 0 normal, 3 batch); empty when it is not running.
    func threadSchedulingPolicies() -> [Int] {
        guard let pid = process?.processIdentifier,
              let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return [] }
        return tasks.compactMap { task in
            // The name (field 2) may hold spaces: count the fields after its closing parenthesis.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8),
                  let end = stat.lastIndex(of: ")") else { return nil }
            let fields = stat[stat.index(after: end)...].split(separator: " ")
            return fields.count > 38 ? Int(fields[38]) : nil
        }
    }

    /// The server's resident memory in KiB (from /proc), nil when it is not running.
    func residentKiB() -> Int? {
        guard let pid = process?.processIdentifier,
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    }

    /// One series of /metrics, e.g. `courier_live_actors{type="device"}`; nil when absent.
    func metric(_ series: String) async throws -> Double? {
        try await http("/metrics").body.components(separatedBy: "\n").first { $0.hasPrefix(series + " ") }
            .flatMap { Double($0.split(separator: " ").last!) }
    }

    /// Waits until `series` satisfies `condition`; its last value either way.
    @discardableResult
    func waitForMetric(_ series: String, timeout: Double = 30, _ condition: (Double) -> Bool) async throws -> Double? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let value = try await metric(series)
            if let value, condition(value) { return value }
            if Date() > deadline { return value }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// SIGTERM, then waits up to `timeout` seconds; returns the exit status (nil: still running,
    /// and then killed).
    func terminate(timeout: Double = 20) async -> Int32? {
        guard let process else { return nil }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        let status = process.isRunning ? nil : process.terminationStatus
        await kill9()
        return status
    }

    /// GET on the operations listener: status code and body.
    func http(_ path: String) async throws -> (status: Int, body: String) {
        let curl = try ExternalProgram.locate("curl", hint: "apt-get install curl (scripts/install-deps)")
        let output = try await ExternalProgram.run(curl, ["-s", "-w", "\n%{http_code}", "http://127.0.0.1:\(httpPort)\(path)"])
        var lines = output.text.components(separatedBy: "\n")
        let status = Int(lines.removeLast()) ?? 0
        return (status, lines.joined(separator: "\n"))
    }

    func serverLog() -> String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// Runs an admin subcommand against this server's data directory; returns its JSON.
    @discardableResult
    func admin(_ arguments: [String]) async throws -> [String: Any] {
        let output = try await ExternalProgram.run(Self.binary, arguments + storageArguments + ["--json"], timeout: 60)
        guard output.status == 0 else { throw ServerTestError("courier-server \(arguments.joined(separator: " ")) failed: \(output.stderr)") }
        guard let object = try JSONSerialization.jsonObject(with: output.stdout) as? [String: Any] else {
            throw ServerTestError("not a JSON object: \(output.text)")
        }
        return object
    }

    /// Runs an admin subcommand and returns its exit status and error text (for refusals).
    func adminFailure(_ arguments: [String]) async throws -> (status: Int32, stderr: String) {
        let output = try await ExternalProgram.run(Self.binary, arguments + storageArguments, timeout: 60)
        return (output.status, output.stderr)
    }

    /// Where the admin subcommands find this server's data.
    private var storageArguments: [String] { ["--data-dir", dataDirectory] + (postgres.map { ["--postgres", $0] } ?? []) }

    struct Account {
        var userID: UInt64
        var deviceID: UInt64
        var token: String
    }

    /// A user with one device, and its token.
    func account(_ user: String, device: String = "phone") async throws -> Account {
        try await admin(["user", "add", user])
        let created = try await admin(["device", "add", user, device])
        return Account(userID: (created["user_id"] as! NSNumber).uint64Value, deviceID: (created["device_id"] as! NSNumber).uint64Value, token: created["token"] as! String)
    }

    func chat(_ name: String, members: [String]) async throws -> UInt64 {
        let created = try await admin(["chat", "create", name] + members.flatMap { ["--member", $0] })
        return (created["id"] as! NSNumber).uint64Value
    }

    /// The chat's history as (sequence, client message id, text, sender device).
    func history(_ chat: String) async throws -> [(sequence: UInt64, clientMessageID: String, text: String, device: UInt64)] {
        let object = try await admin(["chat", "history", chat, "--limit", "100000"])
        return (object["messages"] as! [[String: Any]]).map {
            (($0["sequence"] as! NSNumber).uint64Value, $0["client_message_id"] as! String, $0["text"] as! String, ($0["sender_device_id"] as! NSNumber).uint64Value)
        }
    }

    func messageCount() async throws -> Int {
        (try await admin(["stats"])["messages"] as! NSNumber).intValue
    }

    /// Waits until the history of `chat` holds `count` messages (consumers run behind the ack).
    func waitForHistory(_ chat: String, count: Int, timeout: Double = 30) async throws -> [(sequence: UInt64, clientMessageID: String, text: String, device: UInt64)] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let history = try await history(chat)
            if history.count >= count || Date() > deadline { return history }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Deletes the server's files; with `COURIER_KEEP_LOGS=DIR` its log is kept there first
    /// (for a failure that only CI or a long loop shows).
    func remove() {
        if let keep = ProcessInfo.processInfo.environment["COURIER_KEEP_LOGS"], !keep.isEmpty {
            try? FileManager.default.createDirectory(atPath: keep, withIntermediateDirectories: true)
            try? FileManager.default.copyItem(atPath: logPath, toPath: "\(keep)/\(URL(fileURLWithPath: dataDirectory).lastPathComponent)-\(UUID().uuidString.prefix(6)).log")
        }
        try? FileManager.default.removeItem(atPath: dataDirectory)
        if !logPath.hasPrefix(dataDirectory) { try? FileManager.default.removeItem(atPath: logPath) }
    }

    static func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw ServerTestError("timed out after \(timeout)")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

struct ServerTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` with a started server; the server is killed and its data removed however
/// `body` ends (the log is kept in the failure message).
func withServer(_ extraArguments: [String] = [], _ body: (ServerProcess) async throws -> Void) async throws {
    let server = try await ServerProcess()
    do {
        try await server.start(extraArguments)
        try await body(server)
        await server.kill9()
        server.remove()
    } catch {
        await server.kill9()
        let log = server.serverLog()
        server.remove()
        throw ServerTestError("\(error)\n--- server log (last 3000 bytes) ---\n\(log.suffix(3000))")
    }
}

/// A CoAP client endpoint on loopback; closed however `body` ends.
func withClient<T>(_ body: (CoAPEndpoint) async throws -> T) async throws -> T {
    let client = try await CoAPEndpoint.bind(host: "127.0.0.1", port: 0, serving: false)
    do {
        let result = try await body(client)
        await client.close()
        return result
    } catch {
        await client.close()
        throw error
    }
}

extension CoAPEndpoint {
    /// POSTs a SendMessage with `token`; returns the response.
    func send(_ message: SendMessage, token: String, to peer: SocketAddress) async throws -> CoAPMessage {
        try await request(.request(.post, path: "/v1/msg", query: ["t=\(token)"], payload: message.serializedBytes(), contentFormat: CoAPContentFormat.protobuf), to: peer)
    }
}
