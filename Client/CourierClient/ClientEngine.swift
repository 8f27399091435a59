import CoAP
import CourierDevice
import CourierProtocol
import DTLS
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// The terminal client's engine, which knows nothing of the screen: an outbox that sends every
/// message, in order, until the server acknowledges it (and only then forgets it), and a push
/// session that keeps the local history current. The screen and the scripting subcommands
/// read `store` and `status`.
public final class ClientEngine: Sendable {
    public enum Connection: Sendable, Equatable {
        case connecting
        case connected
        /// The push session ended (`reason`, for a log); the next try is at `retryAt`.
        case disconnected(reason: String, retryAt: ContinuousClock.Instant)
        case refused(reason: String)
    }

    /// What the status bar shows.
    public struct Status: Sendable, Equatable {
        public var connection: Connection = .connecting
        /// The last problem sending the outbox's head (cleared when a send succeeds).
        public var sendProblem: String?

        public init(connection: Connection = .connecting, sendProblem: String? = nil) {
            self.connection = connection
            self.sendProblem = sendProblem
        }

        /// The connection in words a person can act on, naming `server` ("host:port"); never
        /// a library's error text.
        public func connectionText(server: String, now: ContinuousClock.Instant = .now) -> String {
            switch connection {
            case .connecting: return "connecting to \(server)"
            case .connected: return "connected"
            case .disconnected(_, let retryAt):
                let seconds = now < retryAt ? ClientEngine.wholeSeconds(retryAt - now) : 0
                return seconds > 0 ? "server unreachable (\(server)), retrying in \(seconds) s" : "server unreachable (\(server)), retrying now"
            case .refused(let reason):
                if reason.contains("replaced") { return "this device connected from elsewhere: restart courier here to take over" }
                return "token refused: run courier login again"
            }
        }
    }

    /// The server as a person gave it to `courier login`.
    public var serverName: String {
        settings.secure.map { "coaps://\(settings.host):\($0.coapsPort)" } ?? "\(settings.host):\(settings.coapPort)"
    }

    public let settings: ClientSettings
    public let store: LocalStore
    public let endpoint: CoAPEndpoint
    public let server: SocketAddress
    private let sender: ReliableSender
    private let push: PushClient
    private let statusBox = NIOLockedValueBox(Status())
    /// Rung when the push session connects: the server is back, so a backing-off send retries now.
    private let serverBack = Nudge()
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    public init(settings: ClientSettings, store: LocalStore, policy: ReliableSender.Policy = .init()) async throws {
        self.settings = settings
        self.store = store
        (endpoint, server) = try await Self.endpoint(toward: settings.host, port: settings.coapPort, secure: settings.secure)
        sender = ReliableSender(endpoint: endpoint, server: server, token: settings.token, policy: policy)
        var pushConfiguration = try PushClient.Configuration(settings.host, settings.pushPort, token: settings.token, secure: settings.secure)
        pushConfiguration.clientName = "courier/1.0"
        push = PushClient(configuration: pushConfiguration, store: store)
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public var status: Status { statusBox.withLockedValue { $0 } }

    /// Runs the outbox and (if `pushSession`) the push session until cancelled.
    public func run(pushSession: Bool = true) async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.drainOutbox() }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(5))
                    self.wake.yield()
                }
            }
            if pushSession {
                group.addTask { await self.push.run() }
                group.addTask {
                    for await event in self.push.events { self.record(event) }
                }
            }
        }
    }

    /// Writes a message (or, with `change`, a change) to the outbox, on disk, and wakes the
    /// sender.
    @discardableResult
    public func send(chatID: UInt64, text: String, change: MessageChange? = nil) throws -> LocalStore.OutboxEntry {
        let entry = try store.enqueue(chatID: chatID, text: text, change: change)
        wake.yield()
        return entry
    }

    public func close() async {
        wake.finish()
        await endpoint.close()
    }

    /// Sends the outbox's head until answered, then the next: one at a time, so the server
    /// numbers a user's messages in the order they were written.
    private func drainOutbox() async {
        var wakeups = wakes.makeAsyncIterator()
        while !Task.isCancelled {
            let next: LocalStore.OutboxEntry?
            do {
                next = try store.nextToSend()
            } catch {
                statusBox.withLockedValue { $0.sendProblem = "the outbox cannot be read; trying again" }
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            guard let entry = next else {
                // Woken by a new message, or by the ticker every few seconds to be safe.
                guard await wakeups.next() != nil else { return }
                continue
            }
            let message = entry.sendMessage
            do {
                let outcome = try await sender.send(message, nudge: serverBack) { attempt in
                    self.statusBox.withLockedValue { $0.sendProblem = Self.describe(attempt) }
                }
                switch outcome {
                case .accepted(let result, _):
                    try store.accepted(result)
                    statusBox.withLockedValue { $0.sendProblem = nil }
                case .refused(let code, let error):
                    try store.failed(clientMessageID: entry.clientMessageID, reason: "\(code) \(error?.message ?? "refused")")
                }
            } catch is CancellationError {
                return
            } catch {
                statusBox.withLockedValue { $0.sendProblem = "could not send; trying again in 1 s" }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    private func record(_ event: PushClient.Event) {
        if case .connected = event { serverBack.ring() }
        statusBox.withLockedValue { status in
            switch event {
            case .connecting: if status.connection != .connected { status.connection = .connecting }
            case .connected: status.connection = .connected
            case .disconnected(let reason, let retryIn): status.connection = .disconnected(reason: reason, retryAt: .now + retryIn)
            case .refused(let reason): status.connection = .refused(reason: reason)
            }
        }
    }

    /// A client endpoint for talking to `host`'s CoAP port (its DTLS port with `secure`), of
    /// the server's address family.
    public static func endpoint(toward host: String, port: Int, secure: SecureTransport? = nil) async throws -> (endpoint: CoAPEndpoint, server: SocketAddress) {
        let server = try SocketAddress.makeAddressResolvingHost(host, port: secure?.coapsPort ?? port)
        var configuration = CoAPEndpoint.Configuration()
        if let secure { configuration.security = DTLSClientSecurity(try secure.dtls(host: host)) }
        return (try await CoAPEndpoint.bind(host: server.protocol == .inet6 ? "::" : "0.0.0.0", port: 0, serving: false, configuration: configuration), server)
    }

    /// A positive duration in whole seconds, rounded up (at least 1).
    static func wholeSeconds(_ duration: Duration) -> Int {
        // From the components, exactly: a division by a second in floating point can land a
        // hair above a whole number of seconds, which rounding up would turn into one more.
        let (seconds, attoseconds) = duration.components
        return max(1, Int(clamping: seconds) + (attoseconds > 0 ? 1 : 0))
    }

    static func describe(_ attempt: ReliableSender.Attempt) -> String {
        switch attempt {
        case .failed(_, let retryIn): return "no answer to a send; retrying in \(wholeSeconds(retryIn)) s"
        case .deferred(_, let retryIn): return "server busy; retrying in \(wholeSeconds(retryIn)) s"
        }
    }
}

/// Where the client talks to and who it is: `courier login` writes it to the config file.
public struct ClientSettings: Codable, Sendable, Equatable {
    public var host: String
    public var coapPort: Int
    public var pushPort: Int
    public var token: String
    public var userID: UInt64
    public var deviceID: UInt64
    /// CoAP over DTLS and push over TLS, when the server offers them (nil: clear text).
    public var secure: SecureTransport?

    public init(host: String, coapPort: Int, pushPort: Int, token: String, userID: UInt64, deviceID: UInt64, secure: SecureTransport? = nil) {
        self.host = host
        self.coapPort = coapPort
        self.pushPort = pushPort
        self.token = token
        self.userID = userID
        self.deviceID = deviceID
        self.secure = secure
    }

    /// `$XDG_CONFIG_HOME/courier/config.json`, else `~/.config/courier/config.json`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.config")
        return base + "/courier/config.json"
    }

    /// `$XDG_STATE_HOME/courier`, else `~/.local/state/courier`: the outbox and the history cache.
    public static func defaultStateDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let base = environment["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.local/state")
        return base + "/courier"
    }

    public static func load(path: String) throws -> ClientSettings {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ClientError("no configuration at \(path); run `courier login --server HOST --token TOKEN` first")
        }
        do {
            return try JSONDecoder().decode(ClientSettings.self, from: data)
        } catch {
            throw ClientError("\(path) is not a valid configuration: \(error)")
        }
    }

    public func save(path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
        // The token is a credential: only the user may read it.
        _ = chmod(path, 0o600)
    }
}

public struct ClientError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// How `courier` reaches a server that offers CoAP over DTLS and push over TLS (`courier login
/// --coaps-port/--psk-identity/--psk-key/--push-tls-port/--ca`).
public struct SecureTransport: Codable, Sendable, Equatable {
    /// The server's DTLS port (5684 by default).
    public var coapsPort: Int
    /// The server's push-over-TLS port (8443 by default); nil keeps push on `ws://`.
    public var pushTlsPort: Int?
    /// The device's pre-shared key (`courier-server device add --psk`); without one the device
    /// checks the server's certificate and proves itself with its token, over DTLS.
    public var pskIdentity: String?
    public var pskKey: String?
    /// PEM authorities the server's certificate must chain to (nil: the system's, for push).
    public var caFile: String?
    /// The device's certificate (common name USER/DEVICE, signed by the server's `tlsClientCa`)
    /// and its key, PEM: over DTLS they name the device instead of a key.
    public var certificateFile: String?
    public var keyFile: String?

    public init(
        coapsPort: Int = 5684, pushTlsPort: Int? = nil, pskIdentity: String? = nil, pskKey: String? = nil, caFile: String? = nil,
        certificateFile: String? = nil, keyFile: String? = nil
    ) {
        self.coapsPort = coapsPort
        self.pushTlsPort = pushTlsPort
        self.pskIdentity = pskIdentity
        self.pskKey = pskKey
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// The DTLS client for `host`: with the key when there is one, else checking the server's
    /// certificate against `caFile` (and showing the device's own, when there is one).
    func dtls(host: String) throws -> DTLSClientConfiguration {
        if let pskIdentity, let pskKey {
            return DTLSClientConfiguration(context: try DTLSContext(role: .client, credentials: .init(psk: true)), psk: (pskIdentity, Array(pskKey.utf8)))
        }
        guard let caFile else { throw ClientError("DTLS needs a pre-shared key (--psk-identity, --psk-key) or the server's authority (--ca)") }
        let credentials = DTLSContext.Credentials(certificateChainFile: certificateFile, privateKeyFile: keyFile, trustedCAFile: caFile)
        return DTLSClientConfiguration(context: try DTLSContext(role: .client, credentials: credentials), serverName: host)
    }
}

extension PushClient.Configuration {
    /// The push session's configuration: over TLS on `secure.pushTlsPort` when set.
    init(_ host: String, _ port: Int, token: String, secure: SecureTransport?) throws {
        guard let secure, let tlsPort = secure.pushTlsPort else {
            self.init(host: host, port: port, token: token)
            return
        }
        self.init(host: host, port: tlsPort, token: token)
        let byAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        tls = try PushClient.tlsContext(trustedCAFile: secure.caFile, byAddress: byAddress)
    }
}
