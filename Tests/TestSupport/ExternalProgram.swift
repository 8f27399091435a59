import Foundation

/// Runs a real program that no one here wrote (libcoap, aiocoap) and collects what it printed.
public struct ExternalProgram {
    public struct Output {
        public var status: Int32
        public var stdout: Data
        public var stderr: String
        public var text: String { String(decoding: stdout, as: UTF8.self) }
        /// The output without the newline command-line tools add after a response body.
        public var body: String { text.hasSuffix("\n") ? String(text.dropLast()) : text }
    }

    public enum Failure: Error, CustomStringConvertible {
        case notInstalled(String, hint: String)
        case timedOut(String, seconds: Double)

        public var description: String {
            switch self {
            case .notInstalled(let name, let hint): "\(name) is not installed: \(hint)"
            case .timedOut(let command, let seconds): "\(command) did not finish within \(seconds) s"
            }
        }
    }

    /// The absolute path of `name` on PATH, or a failure telling how to install it.
    public static func locate(_ name: String, hint: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw Failure.notInstalled(name, hint: hint)
    }

    /// Runs to completion, killing the program if it outlives `timeout`.
    public static func run(_ executable: String, _ arguments: [String], timeout: Double = 30) async throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The child has its copies of the write ends; ours would keep the pipes open.
        try? stdout.fileHandleForWriting.close()
        try? stderr.fileHandleForWriting.close()
        // Drain the pipes while the program runs, so a large output cannot block it; on dispatch
        // threads, since a blocking read on the cooperative pool (2 threads here) would stall
        // every other task of the test for as long as the program runs.
        async let out = Self.readToEnd(stdout)
        async let err = Self.readToEnd(stderr)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline {
                await stop(process)
                throw Failure.timedOut(([executable] + arguments).joined(separator: " "), seconds: timeout)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return Output(status: process.terminationStatus, stdout: await out, stderr: String(decoding: await err, as: UTF8.self))
    }

    /// Reads until the program closes its end, then closes ours: a pipe left to deinit stayed
    /// open (900 of them after a full run), and every child the tests start inherited them,
    /// until PostgreSQL refused to start ("insufficient file descriptors").
    private static func readToEnd(_ pipe: Pipe) async -> Data {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                try? pipe.fileHandleForReading.close()
                continuation.resume(returning: data)
            }
        }
    }

    /// Runs `body` while a long-running peer is up, and stops the peer however `body` ends.
    public static func withRunning<T>(_ executable: String, _ arguments: [String], _ body: (Process) async throws -> T) async throws -> T {
        let process = try start(executable, arguments)
        do {
            let result = try await body(process)
            await stop(process)
            return result
        } catch {
            await stop(process)
            throw error
        }
    }

    /// Kills a peer and waits for it to go. SIGKILL, because a child of this process may inherit
    /// a signal mask that blocks SIGTERM; polling, because `waitUntilExit` spins on Linux.
    public static func stop(_ process: Process) async {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    }

    private static func start(_ executable: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("courier-peer-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let logHandle = try FileHandle(forWritingTo: log)
        process.standardError = logHandle
        try process.run()
        try? logHandle.close()
        return process
    }
}
