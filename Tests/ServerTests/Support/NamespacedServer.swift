import Foundation
import TestSupport

/// A `courier-server` running inside a network namespace of `NetworkNamespacePair`, bound to
/// the namespace's address. `files` is an unstarted `ServerProcess` lending its data directory,
/// ports (free inside the namespace too: nothing else runs there) and admin subcommands, which
/// read the data directory and need no network.
final class NamespacedServer: @unchecked Sendable {
    // @unchecked: `process` is touched only by the test that owns this server, one step at a time.
    let files: ServerProcess
    let pair: NetworkNamespacePair
    private var process: Process?

    init(in pair: NetworkNamespacePair) async throws {
        self.pair = pair
        files = try await ServerProcess()
    }

    var address: String { pair.serverAddress }

    /// Starts the server in the namespace and returns once its operations listener is ready.
    func start() async throws {
        let process = Process()
        let (ip, arguments) = pair.exec(in: pair.serverNamespace, [
            ServerProcess.binary, "serve", "--data-dir", files.dataDirectory, "--bind", address, "--coap-port", "\(files.coapPort)",
            "--http-bind", address, "--http-port", "\(files.httpPort)", "--push-port", "\(files.pushPort)", "--log-level", "info",
        ])
        // The same launcher as ServerProcess: unblock SIGTERM and SIGINT, then exec (ip netns
        // exec execs too, so the process id is the server's).
        process.executableURL = URL(fileURLWithPath: try ExternalProgram.locate("python3", hint: "apt-get install python3"))
        process.arguments = [
            "-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT]); os.execv(sys.argv[1], sys.argv[1:])",
            ip,
        ] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        _ = FileManager.default.createFile(atPath: files.logPath, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: files.logPath))
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(30)
        while true {
            guard process.isRunning else { throw ServerTestError("courier-server exited at start: \(files.serverLog())") }
            if (try? await http("/ready"))?.status == 200 { return }
            if Date() > deadline { throw ServerTestError("courier-server in \(pair.serverNamespace) was not ready within 30 s: \(files.serverLog())") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// GET on the operations listener, from inside the server's namespace.
    func http(_ path: String) async throws -> (status: Int, body: String) {
        let curl = try ExternalProgram.locate("curl", hint: "apt-get install curl (scripts/install-deps)")
        let output = try await pair.run(in: pair.serverNamespace, [curl, "-s", "-m", "5", "-w", "\n%{http_code}", "http://\(address):\(files.httpPort)\(path)"])
        var lines = output.text.components(separatedBy: "\n")
        let status = Int(lines.removeLast()) ?? 0
        return (status, lines.joined(separator: "\n"))
    }

    /// Runs `courier-sim run` in the device namespace against this server and reads its report.
    func simulate(_ arguments: [String], timeout: Double = 300) async throws -> SimulatorRun {
        try await Simulator.run(
            server: "\(address):\(files.coapPort)", pushPort: files.pushPort, admin: "http://\(address):\(files.httpPort)",
            dataDirectory: files.dataDirectory, arguments, timeout: timeout
        ) { pair.exec(in: pair.deviceNamespace, $0) }
    }

    /// kill -9 of the server (only this process); a no-op once stopped.
    func kill9() async {
        guard let process else { return }
        await ExternalProgram.stop(process)
        self.process = nil
    }
}

/// Runs `body` with a server started in `pair`'s server namespace; the server is killed and
/// its data removed however `body` ends (the log is kept in the failure message).
func withNamespacedServer(in pair: NetworkNamespacePair, _ body: (NamespacedServer) async throws -> Void) async throws {
    let server = try await NamespacedServer(in: pair)
    do {
        try await server.start()
        try await body(server)
        await server.kill9()
        server.files.remove()
    } catch {
        await server.kill9()
        let log = server.files.serverLog()
        server.files.remove()
        throw ServerTestError("\(error)\n--- server log (last 3000 bytes) ---\n\(log.suffix(3000))")
    }
}
