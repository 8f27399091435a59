import CourierProtocol
import Foundation
import TestSupport

/// A push session that only watches, on Python's websockets (a client no one here wrote): it
/// sends its frames (a Hello, perhaps a SyncRequest) and records every frame the server sends
/// until `finish()`, so a test can say what a device was pushed, or that it was pushed nothing.
/// It never acknowledges, so a push it sees twice at the same sequence is a resend, not a copy.
final class PushWitness: @unchecked Sendable {
    // @unchecked: used by one test, one step at a time.
    private static let script = """
        import asyncio, sys
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus
        out = open(sys.argv[2], "w", buffering=1)
        async def main():
            loop = asyncio.get_running_loop()
            # stdin closing is the signal to stop watching.
            stop = loop.run_in_executor(None, sys.stdin.read)
            try:
                async with connect(sys.argv[1], max_size=None, open_timeout=10) as ws:
                    for frame in sys.argv[3:]:
                        await ws.send(bytes.fromhex(frame))
                    while True:
                        receive = asyncio.ensure_future(ws.recv())
                        done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                        if receive not in done:
                            receive.cancel()
                            print("end", file=out)
                            return
                        try:
                            answer = receive.result()
                        except ConnectionClosed as closed:
                            rcvd = closed.rcvd
                            print("closed", rcvd.code if rcvd else 0, rcvd.reason if rcvd else "", file=out)
                            return
                        print("frame", answer.hex() if isinstance(answer, bytes) else answer.encode().hex(), file=out)
            except InvalidStatus as refused:
                print("refused", refused.response.status_code, file=out)
        asyncio.run(main())
        """

    private let process: Process
    private let input: Pipe
    private let outputPath: String

    /// Opens the session with `frames` (`?t=TOKEN` may go in `query`) and returns once the server
    /// has answered it (a first frame, a close or a refusal).
    init(pushPort: Int, query: String = "", frames: [ClientFrame]) async throws {
        outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("courier-witness-\(UUID().uuidString).txt").path
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: try ExternalProgram.locate("python3", hint: "apt-get install python3"))
        process.arguments = ["-c", Self.script, "ws://127.0.0.1:\(pushPort)/v1/push\(query)", outputPath]
            + frames.map { $0.serializedBytes().map { String(format: "%02x", $0) }.joined() }
        input = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(15)
        while lines.isEmpty {
            guard process.isRunning else { break }
            if Date() > deadline {
                await ExternalProgram.stop(process)
                throw ServerTestError("the push witness got no answer within 15 s")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    private var lines: [String] {
        ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// What the server sent: its frames, and how the session ended (`closed CODE REASON`,
    /// `refused STATUS`, or `end` when the witness stopped).
    struct Record {
        var frames: [ServerFrame]
        var ending: String?

        /// Pushed messages as (chat, sequence, client message id), one per distinct sequence.
        var messages: [(chat: UInt64, sequence: UInt64, clientMessageID: String)] {
            var seen = Set<[UInt64]>()
            return frames.compactMap { frame -> (UInt64, UInt64, String)? in
                guard case .push(.message(let message)) = frame, seen.insert([message.chatID, message.chatSequence]).inserted else { return nil }
                return (message.chatID, message.chatSequence, message.clientMessageID)
            }
        }
    }

    /// Stops watching and returns everything the session saw. With `awaitingClose`, first
    /// gives the server up to 5 s to end the session itself (a refusal sends its Error frame
    /// and its close in separate writes, so stopping at the first frame would race the close).
    func finish(awaitingClose: Bool = false) async -> Record {
        if awaitingClose {
            let closeDeadline = Date().addingTimeInterval(5)
            while process.isRunning && !lines.contains(where: { !$0.hasPrefix("frame ") }) && Date() < closeDeadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        await ExternalProgram.stop(process)
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        return seen
    }

    /// What the session has seen so far; the witness goes on watching.
    var seen: Record {
        var record = Record(frames: [], ending: nil)
        for line in lines {
            if line.hasPrefix("frame ") {
                let hex = Array(line.dropFirst(6))
                let bytes = stride(from: 0, to: hex.count, by: 2).compactMap { UInt8(String(hex[$0..<min($0 + 2, hex.count)]), radix: 16) }
                if let frame = try? ServerFrame(serializedBytes: bytes) { record.frames.append(frame) }
            } else {
                record.ending = line
            }
        }
        return record
    }

    /// Waits until the session has seen `count` pushed messages, or `timeout` passes.
    func waitForMessages(_ count: Int, timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while seen.messages.count < count && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
    }
}
