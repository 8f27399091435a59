import Foundation
import TestSupport

/// A `courier-sim proxy` child process on a loopback port of its own, relaying to a server's
/// gateway. Only this process is ever signalled or killed.
final class FaultProxyProcess: @unchecked Sendable {
    // @unchecked: `process` is touched only by the test that owns this proxy, one step at a time.
    let port: Int
    let seed: UInt64
    let outputPath: String
    let statsPath: String
    private var process: Process?

    var gateway: String { "127.0.0.1:\(port)" }
    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Starts the proxy with `faults` (its options, e.g. `["--drop", "30"]`) and returns once it
    /// listens. Its output and counters go into `directory`.
    init(upstreamPort: Int, seed: UInt64, faults: [String], directory: String) async throws {
        self.seed = seed
        port = try await freeUDPPort()
        outputPath = "\(directory)/proxy-\(port).out"
        statsPath = "\(directory)/proxy-\(port).json"
        let process = Process()
        // Through a launcher that unblocks SIGTERM (children of the test inherit it blocked), so
        // the proxy's own shutdown, which writes the counters, is what runs.
        process.executableURL = URL(fileURLWithPath: try ExternalProgram.locate("python3", hint: "apt-get install python3"))
        process.arguments = [
            "-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT]); os.execv(sys.argv[1], sys.argv[1:])",
            Simulator.binary, "proxy", "--listen", "127.0.0.1:\(port)", "--upstream", "127.0.0.1:\(upstreamPort)",
            "--seed", "\(seed)", "--stats-json", statsPath,
        ] + faults
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(20)
        while !output.contains("listening on") {
            guard process.isRunning else { throw ServerTestError("courier-sim proxy exited at start: \(output)") }
            if Date() > deadline { throw ServerTestError("courier-sim proxy did not listen within 20 s: \(output)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// SIGTERM, as an operator would stop it; returns its counters (`--stats-json`).
    func stop() async throws -> FaultProxyStats {
        guard let process else { throw ServerTestError("the proxy was already stopped") }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        await kill9()
        let data = try Data(contentsOf: URL(fileURLWithPath: statsPath))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ServerTestError("the proxy's counters are not a JSON object: \(output)")
        }
        return FaultProxyStats(object: object)
    }

    /// kill -9, for cleanup whatever happened; a no-op once stopped.
    func kill9() async {
        guard let process else { return }
        await ExternalProgram.stop(process)
        self.process = nil
    }
}

/// The counters `courier-sim proxy --stats-json` writes.
struct FaultProxyStats: Sendable {
    // The JSON, read only.
    nonisolated(unsafe) let object: [String: Any]

    /// A counter of "upstream" (device -> server), "downstream" or "total", e.g. "dropped".
    func count(_ direction: String, _ key: String) -> Int {
        ((object[direction] as? [String: Any])?[key] as? NSNumber)?.intValue ?? -1
    }

    func count(_ key: String) -> Int { (object[key] as? NSNumber)?.intValue ?? -1 }

    var summary: String {
        ["forwarded", "dropped", "duplicated", "reordered", "delayed", "partitioned", "late_sent"]
            .map { "\($0) \(count("total", $0))" }.joined(separator: ", ")
    }
}

/// Runs `body` with a proxy in front of `server`'s gateway; the proxy is killed however it ends.
func withFaultProxy<T>(_ server: ServerProcess, upstreamPort: Int? = nil, seed: UInt64, faults: [String], _ body: (FaultProxyProcess) async throws -> T) async throws -> T {
    let proxy = try await FaultProxyProcess(upstreamPort: upstreamPort ?? server.coapPort, seed: seed, faults: faults, directory: server.dataDirectory)
    do {
        let result = try await body(proxy)
        await proxy.kill9()
        return result
    } catch {
        let output = proxy.output
        await proxy.kill9()
        throw ServerTestError("\(error)\n--- courier-sim proxy output ---\n\(output.suffix(2000))")
    }
}
