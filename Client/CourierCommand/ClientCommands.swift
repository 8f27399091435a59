import ArgumentParser
import CoAP
import CourierClient
import CourierProtocol
import CourierTUI
import Foundation

/// Where the configuration and the state live; every subcommand that talks to a server takes these.
struct ClientLocation: ParsableArguments {
    @Option(help: "Configuration file (written by `courier login`).")
    var config: String = ClientSettings.defaultPath()

    @Option(help: "Directory of the outbox and the history cache.")
    var stateDir: String = ClientSettings.defaultStateDirectory()

    @Option(help: "Server host, instead of the configuration's.") var server: String?
    @Option(help: "Server CoAP port, instead of the configuration's.") var coapPort: Int?
    @Option(help: "Server push port, instead of the configuration's.") var pushPort: Int?

    /// The configuration file's settings, with the flags given here instead of its values.
    func settings() throws -> ClientSettings {
        var settings = try ClientSettings.load(path: config)
        if let server { settings.host = server }
        if let coapPort { settings.coapPort = coapPort }
        if let pushPort { settings.pushPort = pushPort }
        return settings
    }

    /// A chat named by id or by name (the user's chats, from the server).
    func resolve(_ chat: String, with engine: ClientEngine) async throws -> UInt64 {
        if let id = UInt64(chat) { return id }
        let calls = ServerCalls(endpoint: engine.endpoint, server: engine.server, token: engine.settings.token)
        let chats = try await calls.chats()
        try engine.store.rememberChats(chats.map { ($0.chatID, $0.name, $0.title) })
        guard let found = chats.first(where: { $0.name == chat }) else {
            throw ClientError("no chat named '\(chat)' among yours (\(chats.map(\.name).joined(separator: ", ")))")
        }
        return found.chatID
    }

    /// The engine over this user's state file (one per user and device).
    func engine() async throws -> ClientEngine {
        let settings = try settings()
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let store = try LocalStore(path: "\(stateDir)/device-\(settings.deviceID).sqlite3", userID: settings.userID)
        return try await ClientEngine(settings: settings, store: store)
    }
}

struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sign in with an invite code, or check a device token, and save it in the configuration file.",
        discussion: """
            With --invite CODE (from `courier-server invite NAME`), the server creates a device of your own, named by --device             (default: this machine's host name), and hands back its token. With --token, the token printed by             `courier-server device add` is checked. --server (default 127.0.0.1), --coap-port (5683) and --push-port (8080)             say where the server is.
            """
    )

    @Option(help: "A one-time invite code printed by `courier-server invite`.") var invite: String?
    @Option(help: "The new device's name, with --invite (default: this machine's host name).") var device: String?
    @Option(help: "The device token printed by `courier-server device add`.") var token: String?
    @Option(help: "Speak CoAP over DTLS to this port of the server (its coapsPort, 5684 by default when --psk-identity or --ca is given).") var coapsPort: Int?
    @Option(help: "The device's pre-shared key identity (`courier-server device add --psk`): CoAP over DTLS proves the device with it.") var pskIdentity: String?
    @Option(help: "The pre-shared key that goes with --psk-identity.") var pskKey: String?
    @Option(help: "Push over TLS (wss://) to this port of the server (its pushTlsPort, e.g. 8443).") var pushTlsPort: Int?
    @Option(help: "PEM file of the authority the server's certificate must chain to (DTLS without a key, and wss://).") var ca: String?
    @Option(help: "PEM certificate of this device (common name USER/DEVICE, from the server's client authority): over DTLS it names the device.") var certificate: String?
    @Option(help: "PEM private key of --certificate.") var key: String?
    @OptionGroup var location: ClientLocation

    /// CoAP over DTLS and push over TLS as asked for; nil: clear text.
    var secure: SecureTransport? {
        guard coapsPort != nil || pskIdentity != nil || pushTlsPort != nil || ca != nil else { return nil }
        return SecureTransport(
            coapsPort: coapsPort ?? 5684, pushTlsPort: pushTlsPort, pskIdentity: pskIdentity, pskKey: pskKey, caFile: ca, certificateFile: certificate, keyFile: key
        )
    }

    func validate() throws {
        guard (invite == nil) != (token == nil) else { throw ValidationError("give either --invite CODE or --token TOKEN") }
        if device != nil, invite == nil { throw ValidationError("--device goes with --invite") }
        if (pskIdentity == nil) != (pskKey == nil) { throw ValidationError("--psk-identity and --psk-key go together") }
        if coapsPort != nil, pskIdentity == nil, ca == nil { throw ValidationError("DTLS needs --psk-identity and --psk-key, or --ca") }
        if (certificate == nil) != (key == nil) { throw ValidationError("--certificate and --key go together") }
        if certificate != nil, ca == nil { throw ValidationError("--certificate needs --ca (the server's authority)") }
    }

    func run() async throws {
        let host = location.server ?? "127.0.0.1"
        let coapPort = location.coapPort ?? 5683
        var signedIn: SignedIn?
        if let invite {
            signedIn = try await CourierClient.Login.redeem(host: host, coapPort: coapPort, secure: secure, code: invite, deviceName: device ?? ProcessInfo.processInfo.hostName)
        }
        guard let deviceToken = signedIn?.token ?? token else { return }
        let settings = try await CourierClient.Login.verify(host: host, coapPort: coapPort, pushPort: location.pushPort ?? 8080, token: deviceToken, secure: secure)
        try settings.save(path: location.config)
        let who = signedIn.map { "\($0.userName) (user \(settings.userID))" } ?? "user \(settings.userID)"
        print("logged in as \(who), device \(settings.deviceID); configuration in \(location.config)")
    }
}

struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a message: it goes to the outbox first, and the command exits once the server holds it.",
        discussion: "Exit status 0: accepted. 1: refused (the reason is printed). 2: no answer within --timeout; the message stays in the outbox and is sent by the next courier command that runs."
    )

    @Argument(help: "Chat name or id.") var chat: String
    @Argument(help: "The message text.") var text: String
    @Option(help: "Seconds to keep trying before leaving the message in the outbox.") var timeout: Double = 60
    @OptionGroup var location: ClientLocation

    func run() async throws {
        let engine = try await location.engine()
        let entry = try engine.send(chatID: try await location.resolve(chat, with: engine), text: text)
        let running = Task { await engine.run(pushSession: false) }
        defer { running.cancel() }
        let deadline = ContinuousClock.now + .seconds(timeout)
        while ContinuousClock.now < deadline {
            switch try engine.store.ownState(clientMessageID: entry.clientMessageID) {
            case .accepted?, .delivered?:
                print("accepted \(entry.clientMessageID)")
                return
            case .failed?:
                let reason = try engine.store.outbox().first { $0.clientMessageID == entry.clientMessageID }?.failure ?? "refused"
                FileHandleOutput.error("courier: the server refused the message: \(reason)")
                throw ExitCode(1)
            default:
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        FileHandleOutput.error("courier: no answer within \(timeout) s (\(engine.status.sendProblem ?? "waiting")); the message waits in the outbox")
        throw ExitCode(2)
    }
}

struct Flush: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send everything waiting in the outbox, then exit (status 2 if some is still waiting after --timeout).")

    @Option(help: "Seconds to keep trying.") var timeout: Double = 60
    @OptionGroup var location: ClientLocation

    func run() async throws {
        let engine = try await location.engine()
        let running = Task { await engine.run(pushSession: false) }
        defer { running.cancel() }
        let deadline = ContinuousClock.now + .seconds(timeout)
        while try engine.store.waitingCount() > 0 {
            guard ContinuousClock.now < deadline else {
                FileHandleOutput.error("courier: \(try engine.store.waitingCount()) messages still wait in the outbox (\(engine.status.sendProblem ?? "no answer"))")
                throw ExitCode(2)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        print("outbox empty")
    }
}

struct Outbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the messages the server has not acknowledged yet.")

    @OptionGroup var location: ClientLocation

    func run() async throws {
        let settings = try location.settings()
        let store = try LocalStore(path: "\(location.stateDir)/device-\(settings.deviceID).sqlite3", userID: settings.userID)
        for entry in try store.outbox() {
            print("\(entry.chatID)\t\(entry.failure.map { "failed: \($0)" } ?? "waiting")\t\(entry.clientMessageID)\t\(entry.text)")
        }
    }
}

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a chat's messages as they arrive (and the outbox drains meanwhile).")

    @Argument(help: "Chat name or id.") var chat: String
    @Option(help: "Print this many earlier messages first.") var last = 10
    @OptionGroup var location: ClientLocation

    func run() async throws {
        let engine = try await location.engine()
        let chat = try await location.resolve(self.chat, with: engine)
        let running = Task { await engine.run() }
        defer { running.cancel() }
        var printed = Set<String>()
        var first = true
        let calls = ServerCalls(endpoint: engine.endpoint, server: engine.server, token: engine.settings.token)
        if let members = try? await calls.members(chatID: chat) { try engine.store.rememberMembers(members) }
        for await _ in engine.store.changed {
            let names = try engine.store.userNames()
            let lines = try engine.store.lines(chatID: chat).filter { $0.sequence != nil }
            for line in (first ? Array(lines.suffix(last)) : lines) where !printed.contains(line.clientMessageID) {
                printed.insert(line.clientMessageID)
                // Unbuffered, so a pipe reader sees each line as it arrives.
                let who = names[line.senderUserID] ?? "user \(line.senderUserID)"
                FileHandleOutput.line(line.renamed ? "#\(line.sequence!) \(who) renamed the chat to “\(line.text)”"
                    : "#\(line.sequence!) \(who): \(line.deleted ? "(deleted)" : line.text + (line.edited ? " (edited)" : ""))")
            }
            first = false
        }
    }
}

enum FileHandleOutput {
    static func line(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    static func error(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a chat's history from the server, oldest first.")

    @Argument(help: "Chat name or id.") var chat: String
    @Option(help: "How many of the newest messages.") var limit: UInt32 = 50
    @OptionGroup var location: ClientLocation

    func run() async throws {
        let engine = try await location.engine()
        let calls = ServerCalls(endpoint: engine.endpoint, server: engine.server, token: engine.settings.token)
        let chatID = try await location.resolve(chat, with: engine)
        let response = try await calls.history(chatID: chatID, limit: limit)
        // Names from the chat's member list; a sender who has left shows by id.
        let names = Dictionary(((try? await calls.members(chatID: chatID).members) ?? []).map { ($0.userID, $0.name) }) { first, _ in first }
        for message in response.messages {
            let who = names[message.senderUserID] ?? "user \(message.senderUserID)"
            switch message.change {
            case .edit?, .delete?: continue  // the message they changed shows as it is now
            case .rename?: FileHandleOutput.line("#\(message.chatSequence) \(who) renamed the chat to “\(message.text)”")
            case nil:
                let text = message.deleted ? "(deleted)" : message.text + (message.editedAtMs != 0 ? " (edited)" : "")
                FileHandleOutput.line("#\(message.chatSequence) \(who): \(text)")
            }
        }
    }
}

struct Search: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Search your chats for messages with these words (whole words).")

    @Argument(parsing: .remaining, help: "Words to find.") var words: [String]
    @Option(help: "Only this chat (name or id).") var chat: String?
    @OptionGroup var location: ClientLocation

    func run() async throws {
        guard !words.isEmpty else { throw ValidationError("give at least one word") }
        let engine = try await location.engine()
        let calls = ServerCalls(endpoint: engine.endpoint, server: engine.server, token: engine.settings.token)
        var chatID: UInt64 = 0
        if let chat { chatID = try await location.resolve(chat, with: engine) }
        for hit in try await calls.search(words: words.joined(separator: " "), chatID: chatID) {
            FileHandleOutput.line("\(hit.chatName) #\(hit.message.chatSequence) \(hit.senderName): \(hit.snippet)")
        }
    }
}

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The chat screen (the default): chats, messages, an input line; /help inside lists commands and keys.")

    @Option(help: "When the terminal bell rings: all (a message in a chat you are not looking at, or one that mentions you), mentions (only @you), off.")
    var bell: ChatApp.Bell = .all
    @OptionGroup var location: ClientLocation

    func run() async throws {
        let engine = try await location.engine()
        let running = Task { await engine.run() }
        await ChatApp(engine: engine, bell: bell).run()
        running.cancel()
        await engine.close()
    }
}

extension ChatApp.Bell: ExpressibleByArgument {}
