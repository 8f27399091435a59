import CourierCore
import CourierProtocol
import Foundation
import TestSupport
import XCTest

/// The `courier` client against the real server: its outbox across an outage, its scripting
/// subcommands, and its screen driven in tmux.
final class ClientEndToEndTests: XCTestCase {
    static var courier: String {
        URL(fileURLWithPath: ServerProcess.binary).deletingLastPathComponent().appendingPathComponent("courier").path
    }

    /// Runs `courier` with a user's configuration and state.
    struct User {
        let directory: String
        var config: String { "\(directory)/config.json" }
        var state: String { "\(directory)/state" }

        init(_ name: String) {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("courier-client-\(name)-\(UUID().uuidString)").path
        }

        var arguments: [String] { ["--config", config, "--state-dir", state] }

        @discardableResult
        func run(_ arguments: [String], expectStatus: Int32 = 0, timeout: Double = 90) async throws -> String {
            let output = try await ExternalProgram.run(ClientEndToEndTests.courier, arguments + self.arguments, timeout: timeout)
            XCTAssertEqual(output.status, expectStatus, "courier \(arguments.joined(separator: " ")): \(output.text) \(output.stderr)")
            return output.text
        }

        func login(_ server: ServerProcess, token: String) async throws {
            try await run(["login", "--server", "127.0.0.1", "--coap-port", "\(server.coapPort)", "--push-port", "\(server.pushPort)", "--token=\(token)"])
        }
    }

    func testMessagesWrittenWhileTheServerIsDownWaitInTheOutboxAndArriveOnceInOrder() async throws {
        try await withServer { server in
            let alice = try await server.account("alice")
            _ = try await server.account("bob")
            let chat = try await server.chat("general", members: ["alice", "bob"])
            let user = User("alice")
            try await user.login(server, token: alice.token)
            let accepted = try await user.run(["send", "general", "before the outage"])
            XCTAssertTrue(accepted.hasPrefix("accepted"), accepted)

            await server.kill9()
            for index in 1...10 {
                // No answer: the message stays in the outbox and the command says so (status 2).
                try await user.run(["send", "\(chat)", "offline \(index)", "--timeout", "0.5"], expectStatus: 2)
            }
            let waiting = try await user.run(["outbox"]).split(separator: "\n")
            XCTAssertEqual(waiting.count, 10)
            XCTAssertTrue(waiting.allSatisfy { $0.contains("\twaiting\t") })

            try await server.start()
            let flushed = try await user.run(["flush", "--timeout", "60"])
            XCTAssertEqual(flushed, "outbox empty\n")
            let history = try await server.waitForHistory("general", count: 11)
            XCTAssertEqual(history.map(\.text), ["before the outage"] + (1...10).map { "offline \($0)" }, "each once, in the order written")
            XCTAssertEqual(history.map(\.sequence), Array(1...11))
            let empty = try await user.run(["outbox"])
            XCTAssertEqual(empty, "")

            // A refusal is reported and not retried: bob's chat is not alice's.
            let other = try await server.chat("private", members: ["bob"])
            try await user.run(["send", "\(other)", "not mine"], expectStatus: 1)
            let failed = try await user.run(["outbox"])
            XCTAssertTrue(failed.contains("failed: 4.03"), failed)

            let printed = try await user.run(["history", "general", "--limit", "3"])
            XCTAssertEqual(printed.split(separator: "\n").map(String.init), ["#9 alice: offline 8", "#10 alice: offline 9", "#11 alice: offline 10"], "names, not user numbers")
        }
    }

    /// Alice and bob, in a chat "general", each logged in with a client state of their own.
    static func aliceAndBobInGeneral(_ server: ServerProcess) async throws -> (alice: ServerProcess.Account, aliceUser: User, bobUser: User) {
        let alice = try await server.account("alice")
        let bob = try await server.account("bob")
        _ = try await server.chat("general", members: ["alice", "bob"])
        let aliceUser = User("alice")
        let bobUser = User("bob")
        try await aliceUser.login(server, token: alice.token)
        try await bobUser.login(server, token: bob.token)
        return (alice, aliceUser, bobUser)
    }

    func testTheScreenSendsShowsDeliveryResizesAndQuitsLeavingTheTerminalSane() async throws {
        let tmux = try Tmux()
        defer { tmux.kill() }
        try await withServer { server in
            let (alice, aliceUser, bobUser) = try await Self.aliceAndBobInGeneral(server)

            try await tmux.start(width: 100, height: 30)
            try await tmux.type("env LANG=C.UTF-8 \(Self.courier) \(aliceUser.arguments.joined(separator: " "))", enter: true, pane: "0")
            try await tmux.waitFor(pane: "0") { $0.contains("connected") && $0.contains("general") }
            try await tmux.type("hello bob 🙂", enter: true, pane: "0")
            try await tmux.waitFor(pane: "0") { $0.contains("you: hello bob 🙂 ✓") }

            // Bob's screen in a second pane: his device acknowledges, so alice's message is delivered.
            try await tmux.split(command: "env LANG=C.UTF-8 \(Self.courier) \(bobUser.arguments.joined(separator: " "))")
            // Bob sees alice by name (the push carries only her id; his client asks for the members).
            let bobScreen = try await tmux.waitFor(pane: "1") { $0.contains("alice: hello bob 🙂") }
            XCTAssertFalse(bobScreen.contains("user \(alice.userID)"), bobScreen)
            try await tmux.type("/members", enter: true, pane: "1")
            let members = try await tmux.waitFor(pane: "1") { $0.contains("Members of general") }
            XCTAssertTrue(members.contains("alice") && members.contains("bob (you)"), members)
            try await tmux.run(["send-keys", "-t", "main.1", "Escape"])
            try await tmux.waitFor(pane: "0") { $0.contains("hello bob 🙂 ✓✓") }

            // While the server is down, messages wait in the outbox and the status bar says so.
            await server.kill9()
            for index in 1...10 { try await tmux.type("queued \(index)", enter: true, pane: "0") }
            try await tmux.waitFor(pane: "0") { $0.contains("outbox: 10 waiting") }
            // It names the server and the retry, in words.
            let down = try await tmux.waitFor(pane: "0") { $0.contains("server unreachable (127.0.0.1:\(server.coapPort)), retrying in") }
            XCTAssertFalse(down.contains("Connection errors"), down)
            try await server.start()
            try await tmux.waitFor(pane: "0", timeout: 60) { $0.contains("outbox: 0 waiting") && $0.contains("queued 10 ✓") }
            let history = try await server.waitForHistory("general", count: 11)
            XCTAssertEqual(history.map(\.text), ["hello bob 🙂"] + (1...10).map { "queued \($0)" })

            // A smaller window: the screen redraws to fit.
            try await tmux.resize(width: 60, height: 16)
            let small = try await tmux.waitFor(pane: "0") { $0.contains("connected") && $0.contains("queued 10") }
            XCTAssertTrue(small.split(separator: "\n").allSatisfy { $0.count <= 60 }, small)

            try await tmux.type("/quit", enter: true, pane: "0")
            try await tmux.waitFor(pane: "0") { !$0.contains("outbox:") }
            try await tmux.type("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo -e -icanon -e -echo | sort | tr '\\n' ' '; echo END", enter: true, pane: "0")
            let sane = try await tmux.waitFor(pane: "0") { $0.contains("echo icanon END") || $0.contains("-echo") || $0.contains("-icanon") }
            XCTAssertTrue(sane.contains("echo icanon END"), "the terminal is back to normal after quitting: \(sane)")
        }
    }

    /// Two people on two screens: names, presence, an edit, a delete, a rename, a mention that
    /// rings the bell and a name completed with Tab, and the day the messages were written.
    func testTwoScreensShowNamesPresenceEditsDeletesRenamesAndAMentionRingsTheBell() async throws {
        let tmux = try Tmux()
        defer { tmux.kill() }
        try await withServer { server in
            let (alice, aliceUser, bobUser) = try await Self.aliceAndBobInGeneral(server)

            // Each in a window of their own, so the bell flag says whose terminal rang.
            try await tmux.start(width: 100, height: 30)
            try await tmux.newWindow("alice", command: "env LANG=C.UTF-8 \(Self.courier) chat --bell mentions \(aliceUser.arguments.joined(separator: " "))")
            try await tmux.newWindow("bob", command: "env LANG=C.UTF-8 \(Self.courier) chat --bell off \(bobUser.arguments.joined(separator: " "))")
            try await tmux.waitFor(pane: ":alice.0") { $0.contains("connected") && $0.contains("general") }
            try await tmux.waitFor(pane: ":bob.0") { $0.contains("connected") && $0.contains("general") }

            // Presence: each sees the other online (in the chat's header and before the name).
            try await tmux.waitFor(pane: ":bob.0") { $0.contains("online: alice") }
            try await tmux.type("lunch at noon?", enter: true, pane: ":alice.0")
            let named = try await tmux.waitFor(pane: ":bob.0") { $0.contains("● alice: lunch at noon?") }
            XCTAssertFalse(named.contains("user \(alice.userID)"), named)
            let weekday = DateFormatter()
            weekday.dateFormat = "EEEE"
            XCTAssertTrue(named.contains("─ \(weekday.string(from: Date())) "), "a day separator heads the day's messages: \(named)")

            // A message that does not mention alice, in the chat she is looking at: no bell.
            try await tmux.type("sounds good", enter: true, pane: ":bob.0")
            try await tmux.waitFor(pane: ":alice.0") { $0.contains("bob: sounds good") }
            let rangEarly = try await tmux.bellRang(window: "alice")
            XCTAssertFalse(rangEarly, "no bell for a message in the chat on screen that does not mention alice")

            // Bob types "@al", Tab completes the name; the mention rings alice's bell.
            try await tmux.type("@al", enter: false, pane: ":bob.0")
            try await tmux.key("Tab", pane: ":bob.0")
            try await tmux.waitFor(pane: ":bob.0") { $0.contains("> @alice") }
            try await tmux.type("see you there", enter: true, pane: ":bob.0")
            try await tmux.waitFor(pane: ":alice.0") { $0.contains("bob: @alice see you there") }
            let deadline = Date().addingTimeInterval(10)
            var rang = false
            while !rang && Date() < deadline {
                rang = try await tmux.bellRang(window: "alice")
                if !rang { try await Task.sleep(for: .milliseconds(200)) }
            }
            XCTAssertTrue(rang, "the mention rang alice's bell")

            // Alice edits her message: both screens show the new text, marked.
            try await tmux.type("/edit lunch at one?", enter: true, pane: ":alice.0")
            try await tmux.waitFor(pane: ":bob.0") { $0.contains("alice: lunch at one? (edited)") && !$0.contains("lunch at noon") }
            try await tmux.waitFor(pane: ":alice.0") { $0.contains("you: lunch at one? (edited)") }

            // Bob deletes his: it shows as deleted on both.
            try await tmux.type("/delete", enter: true, pane: ":bob.0")
            try await tmux.waitFor(pane: ":alice.0") { $0.contains("bob: (deleted)") && !$0.contains("see you there") }
            try await tmux.waitFor(pane: ":bob.0") { $0.contains("you: (deleted)") }

            // Bob renames the chat: both chat lists show the new name, and alice sees who did it.
            try await tmux.type("/rename Lunch plans", enter: true, pane: ":bob.0")
            try await tmux.waitFor(pane: ":alice.0") { $0.contains("bob renamed the chat to “Lunch plans”") && $0.contains("# Lunch plans") }
            try await tmux.waitFor(pane: ":bob.0") { $0.contains("# Lunch plans") }

            let history = try await server.history("general").map(\.text)
            XCTAssertEqual(history, ["lunch at one?", "sounds good", "", "lunch at one?", "", "Lunch plans"],
                           "the server holds the messages as they are now, and the changes as entries")

            // Alice leaves the screen: bob's header no longer lists her.
            try await tmux.type("/quit", enter: true, pane: ":alice.0")
            try await tmux.waitFor(pane: ":bob.0") { !$0.contains("online: alice") }
        }
    }

    /// PgUp past the local cache (2,000 messages a chat) pages older messages from the server's
    /// history: with 3,000 in a chat, the first one is reached.
    func testPageUpPastTheLocalCacheReachesTheFirstMessageFromTheServer() async throws {
        let tmux = try Tmux()
        defer { tmux.kill() }
        // Alice's 3,000 sends go as fast as they are answered: past the default device rate.
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("courier-fast-\(UUID().uuidString).json")
        try Data(#"{"deviceRatePerSecond": 100000, "deviceBurst": 100000}"#.utf8).write(to: config)
        defer { try? FileManager.default.removeItem(at: config) }
        try await withServer(["--config", config.path]) { server in
            let alice = try await server.account("alice")
            let bob = try await server.account("bob")
            let chat = try await server.chat("general", members: ["alice", "bob"])
            try await withClient { client in
                for index in 1...3000 {
                    let sent = try await client.send(SendMessage(clientMessageID: "m\(index)", chatID: chat, text: String(format: "line %04d", index), clientSentAtMs: 1), token: alice.token, to: server.peer)
                    XCTAssertEqual(sent.code, .created)
                }
            }
            let bobUser = User("bob")
            try await bobUser.login(server, token: bob.token)
            try await tmux.start(width: 100, height: 30)
            try await tmux.type("env LANG=C.UTF-8 \(Self.courier) \(bobUser.arguments.joined(separator: " "))", enter: true, pane: "0")
            try await tmux.waitFor(pane: "0", timeout: 60) { $0.contains("line 3000") }
            let deadline = ContinuousClock.now + .seconds(90)
            var screen = ""
            while ContinuousClock.now < deadline {
                try await tmux.run(["send-keys", "-t", "main.0", "-N", "40", "PPage"])
                try await Task.sleep(for: .milliseconds(300))
                screen = try await tmux.run(["capture-pane", "-p", "-t", "main.0"])
                if screen.contains("line 0001") { break }
            }
            XCTAssertTrue(screen.contains("line 0001"), "the first message, from the server's history: \(screen)")
        }
    }
}

/// A tmux server of the test's own (its own socket), driven with send-keys and read with
/// capture-pane.
final class Tmux: @unchecked Sendable {
    // @unchecked: used by one test, one step at a time.
    let socket = "courier-test-\(UUID().uuidString.prefix(8))"
    let tmux: String

    init() throws {
        tmux = try ExternalProgram.locate("tmux", hint: "apt-get install tmux (scripts/install-deps)")
    }

    @discardableResult
    func run(_ arguments: [String]) async throws -> String {
        let output = try await ExternalProgram.run(tmux, ["-L", socket, "-f", "/dev/null"] + arguments)
        guard output.status == 0 else { throw ServerTestError("tmux \(arguments.joined(separator: " ")): \(output.stderr)") }
        return output.text
    }

    func start(width: Int, height: Int) async throws {
        // Spawned and reaped here, not with Foundation's Process: the tmux client that starts
        // a server was seen left unreaped by it (a zombie the test then waited on forever).
        let shell = "\(tmux) -L \(socket) -f /dev/null new-session -d -s main -x \(width) -y \(height) \"env PS1='$ ' bash --norc --noprofile\" </dev/null >/dev/null 2>&1"
        let status = await Self.spawnAndWait(["/bin/sh", "-c", shell])
        guard status == 0 else { throw ServerTestError("tmux new-session failed (\(status))") }
    }

    static func spawnAndWait(_ arguments: [String]) async -> Int32 {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var pid: pid_t = 0
                let argv = arguments.map { strdup($0) } + [nil]
                defer { argv.forEach { free($0) } }
                guard posix_spawn(&pid, arguments[0], nil, nil, argv, environ) == 0 else { return continuation.resume(returning: -1) }
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                continuation.resume(returning: (status >> 8) & 0xff)
            }
        }
    }

    func split(command: String) async throws {
        try await run(["split-window", "-t", "main", "-v", command])
    }

    /// A pane of the first window ("0", "1"), or of another (":bob.0").
    static func target(_ pane: String) -> String {
        pane.hasPrefix(":") ? "main\(pane)" : "main.\(pane)"
    }

    func type(_ text: String, enter: Bool, pane: String) async throws {
        try await run(["send-keys", "-t", Self.target(pane), "-l", text])
        if enter { try await run(["send-keys", "-t", Self.target(pane), "Enter"]) }
    }

    /// A key by its tmux name ("Tab", "Escape") to a pane.
    func key(_ name: String, pane: String) async throws {
        try await run(["send-keys", "-t", Self.target(pane), name])
    }

    /// A new window running `command`, named `name`.
    func newWindow(_ name: String, command: String) async throws {
        try await run(["new-window", "-d", "-t", "main", "-n", name, command])
    }

    /// Whether the window has rung the terminal bell (tmux's alert flag, kept while the
    /// session has no client looking at it).
    func bellRang(window: String) async throws -> Bool {
        try await run(["display-message", "-p", "-t", "main:\(window)", "#{window_bell_flag}"]).trimmingCharacters(in: .whitespacesAndNewlines) == "1"
    }

    func resize(width: Int, height: Int) async throws {
        try await run(["resize-window", "-t", "main", "-x", "\(width)", "-y", "\(height)"])
    }

    func capture(pane: String) async throws -> String {
        try await run(["capture-pane", "-p", "-t", Self.target(pane)])
    }

    /// Waits until the pane's text satisfies `condition`; returns that text.
    @discardableResult
    func waitFor(pane: String, timeout: Double = 20, _ condition: (String) -> Bool) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let text = try await capture(pane: pane)
            if condition(text) { return text }
            if Date() > deadline { throw ServerTestError("pane \(pane) never showed what was expected; it shows:\n\(text)") }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    func kill() {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tmux)
        process.arguments = ["-L", socket, "kill-server"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try? process.run()
        // Polling: waitUntilExit spins on Linux.
        while process.isRunning { usleep(10_000) }
    }
}
