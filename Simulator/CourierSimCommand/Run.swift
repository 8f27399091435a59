import ArgumentParser
import CoAP
import CourierDevice
import CourierSimulator
import Foundation
import NIOCore

/// `courier-sim run`: provision, simulate, judge, report. Exit 0 when the oracle finds
/// nothing wrong, 1 when it finds loss, duplicates or reordering, 2 when the run could not
/// be set up.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Simulate a fleet against a server and judge its delivery (the default subcommand).",
        discussion: """
        Provisions USERS x DEVICES-PER-USER devices and CHATS chats of MEMBERS users through the \
        server's admin API, opens a push session per device, sends at the chosen rate, then waits \
        until every acknowledged message reached every member device (or --settle-timeout). \
        Exit status: 0 nothing lost, duplicated or reordered; 1 the oracle found faults; 2 the \
        run could not start, or proved nothing (no message acknowledged, or devices that could \
        not start).
        """
    )

    @Option(help: "Server's CoAP gateway as host[:port]; repeat it for the nodes of a cluster (devices are spread over them). Default: 127.0.0.1.", transform: parseServer)
    var server: [HostAndPort] = []

    @Option(help: "Server's WebSocket push port; once for every node, or once per --server. (default: 8080)")
    var pushPort: [Int] = []

    var nodes: [Fleet.Node] {
        get throws {
            let servers = server.isEmpty ? [HostAndPort(host: "127.0.0.1")] : server
            let ports = pushPort.isEmpty ? [8080] : pushPort
            guard ports.count == 1 || ports.count == servers.count else {
                throw ValidationError("give --push-port once, or once per --server (\(servers.count))")
            }
            return servers.enumerated().map { index, server in
                // Over DTLS the default port is coaps' (5684), not coap's.
                let port = dtls && server.port == HostAndPort.defaultCoAPPort ? HostAndPort.defaultCoAPSPort : server.port
                return Fleet.Node(host: server.host, coapPort: port, pushPort: ports.count == 1 ? ports[0] : ports[index])
            }
        }
    }

    @Option(help: "Server's operations listener, where the admin API is.")
    var admin = "http://127.0.0.1:8081"

    @Option(help: "The admin token (default: $COURIER_ADMIN_TOKEN, or --admin-token-file).")
    var adminToken: String?

    @Option(help: "File holding the admin token (the server writes DATA_DIR/admin.token).")
    var adminTokenFile: String?

    @Option(help: "Names of the provisioned users and chats start with this (reused by later runs).")
    var prefix = "sim"

    @Option(help: "Users in the fleet.") var users = 500
    @Option(help: "Devices per user.") var devicesPerUser = 2
    @Option(help: "Chats (default: users / members, at least 1).") var chats: Int?
    @Option(help: "Users per chat.") var members = 4

    @Option(help: "Only the first this many members of each chat send into it (default: all; 1 with --members 2 makes sender/receiver pairs).") var sendersPerChat: Int?
    @Option(help: "Messages per second per device.") var rate = 0.1
    @Option(help: "Cap on the fleet's total messages per second.") var totalRate: Double?
    @Option(help: "Bytes of text per message.") var messageBytes = 100
    @Option(help: "Percent of sends that edit or delete (half each) the device's newest own message in the chat instead; the oracle judges them as messages.")
    var changes = 0.0
    @Option(help: "Seconds of sending (default 30, unless --messages is given).") var duration: Double?
    @Option(help: "Stop after this many messages instead of after a duration.") var messages: Int?
    @Option(help: "Seconds over which devices start, evenly.") var rampUp = 5.0
    @Option(help: "Messages sent in the first this many seconds are judged by the oracle but left out of the latency figures.") var warmup = 0.0
    @Option(help: "Messages one device may have unanswered at once (each lane keeps its order).") var window = 1

    @Option(help: "Percent of datagrams dropped in both directions (see --drop-out/--drop-in).") var drop: Double?
    @Option(help: "Percent of outgoing datagrams dropped.") var dropOut = 0.0
    @Option(help: "Percent of incoming datagrams dropped.") var dropIn = 0.0
    @Option(help: "Percent of datagrams duplicated in both directions.") var duplicate: Double?
    @Option(help: "Percent of outgoing datagrams duplicated.") var duplicateOut = 0.0
    @Option(help: "Percent of incoming datagrams duplicated.") var duplicateIn = 0.0
    @Option(help: "Percent of devices whose push session is dropped once, at a random time.") var disconnect = 0.0

    @Option(help: "Seconds unanswered sends may still finish after sending stops.") var drainTimeout = 30.0
    @Option(help: "Seconds acknowledged messages may take to reach every device after that.") var settleTimeout = 30.0
    @Option(help: "Seed for every random choice (default: random; printed).") var seed: UInt64?
    @Option(help: "Comma-separated local addresses to send from (default: 127.0.0.N per 10,000 devices on loopback).") var sourceAddresses: String?

    @Option(help: "Write the report as JSON to this file.") var json: String?
    @Option(help: "Write the report as a self-contained HTML page to this file.") var html: String?
    @Flag(help: "CoAP over DTLS 1.2: each device gets a pre-shared key when provisioned, and --server names the nodes' DTLS ports (courier-server --dtls-psk; 5684 when none or 5683 is given).") var dtls = false
    @Flag(help: "Push over TLS: the push ports given are the nodes' wss:// ports (courier-server pushTlsPort), whose certificates must chain to --ca.") var pushTls = false
    @Option(help: "PEM file of the authority the nodes' TLS certificates chain to (with --push-tls; default: the system's).") var ca: String?
    @Flag(help: "No progress line.") var quiet = false

    var chatCount: Int { chats ?? max(1, users / max(1, members)) }

    func validate() throws {
        func check(_ condition: Bool, _ message: String) throws { if !condition { throw ValidationError(message) } }
        try check((1...100_000).contains(users), "--users must be 1-100000")
        try check((1...16).contains(devicesPerUser), "--devices-per-user must be 1-16")
        try check(users * devicesPerUser <= 100_000, "at most 100,000 devices (users x devices-per-user)")
        try check((1...100_000).contains(chatCount), "--chats must be 1-100000")
        try check((1...min(users, 10_000)).contains(members), "--members must be 1-min(users, 10000)")
        try check(sendersPerChat.map { (1...members).contains($0) } ?? true, "--senders-per-chat must be 1-members")
        try check(rate > 0 && rate <= 10_000, "--rate must be above 0 and at most 10000")
        try check(totalRate.map { $0 > 0 } ?? true, "--total-rate must be above 0")
        try check((1...8000).contains(messageBytes), "--message-bytes must be 1-8000")
        try check((0...100).contains(changes), "--changes must be 0-100")
        try check(duration.map { $0 > 0 && $0 <= 86_400 } ?? true, "--duration must be above 0 and at most 86400")
        try check(messages.map { $0 > 0 } ?? true, "--messages must be above 0")
        try check(!(duration != nil && messages != nil), "give --duration or --messages, not both")
        try check(rampUp >= 0 && rampUp <= 3600, "--ramp-up must be 0-3600")
        try check(warmup >= 0 && warmup <= 3600, "--warmup must be 0-3600")
        try check((1...64).contains(window), "--window must be 1-64")
        for (name, value) in [("drop", drop ?? 0), ("drop-out", dropOut), ("drop-in", dropIn), ("duplicate", duplicate ?? 0), ("duplicate-out", duplicateOut), ("duplicate-in", duplicateIn), ("disconnect", disconnect)] {
            try check((0...100).contains(value), "--\(name) must be a percentage, 0-100")
        }
        try check((0...3600).contains(drainTimeout) && (0...3600).contains(settleTimeout), "--drain-timeout and --settle-timeout must be 0-3600 seconds")
        try check(pushPort.allSatisfy { (1...65_535).contains($0) }, "--push-port must be 1-65535")
        _ = try nodes
        try check(messages.map { $0 <= DeliveryOracle.maxMessages } ?? true, "--messages must be at most \(DeliveryOracle.maxMessages) (the oracle remembers every message)")
        for address in sourceAddresses?.split(separator: ",") ?? [] {
            let text = address.trimmingCharacters(in: .whitespaces)
            try check((try? SocketAddress(ipAddress: text, port: 0)) != nil, "--source-addresses takes IP addresses, got '\(text)'")
        }
        try check(URL(string: admin)?.scheme?.hasPrefix("http") == true, "--admin must be an http:// URL")
    }

    func run() async throws {
        let token: String
        do {
            if let adminToken {
                token = adminToken
            } else if let adminTokenFile {
                token = try Provisioning.readToken(path: adminTokenFile)
            } else if let fromEnvironment = ProcessInfo.processInfo.environment["COURIER_ADMIN_TOKEN"], !fromEnvironment.isEmpty {
                token = fromEnvironment
            } else {
                throw ValidationError("give --admin-token, --admin-token-file or COURIER_ADMIN_TOKEN (the server writes DATA_DIR/admin.token)")
            }
        } catch let error as ValidationError {
            throw error
        } catch {
            throw ValidationError("cannot read the admin token: \(error)")
        }
        // Each device holds a UDP and a TCP socket; past the open-file limit, devices would
        // fail one by one mid-run instead of the run refusing now.
        let openFiles = FileDescriptorLimit.raise()?.soft ?? 0
        let needed = UInt64(users * devicesPerUser * 2 + 256)
        guard openFiles >= needed else {
            FileHandle.standardError.write(Data("courier-sim: \(users * devicesPerUser) devices need about \(needed) open files and this process may open \(openFiles); raise the hard limit (ulimit -Hn) or run several courier-sim processes with different --prefix\n".utf8))
            throw ExitCode(2)
        }

        var faults = SimulationReport.Faults()
        faults.dropOutgoing = drop ?? dropOut
        faults.dropIncoming = drop ?? dropIn
        faults.duplicateOutgoing = duplicate ?? duplicateOut
        faults.duplicateIncoming = duplicate ?? duplicateIn
        faults.disconnectSessions = disconnect
        let seed = seed ?? UInt64.random(in: 1 ... .max)
        var settings = SimulationReport.Settings(
            server: try nodes.map { "\($0.host):\($0.coapPort)" }.joined(separator: ","), users: users, devicesPerUser: devicesPerUser, chats: chatCount, membersPerChat: members,
            ratePerDevice: rate, totalRate: totalRate, messageBytes: messageBytes, durationSeconds: messages == nil ? (duration ?? 30) : nil,
            messageCount: messages, rampUpSeconds: rampUp, window: window, faults: faults, seed: seed
        )
        settings.sendersPerChat = sendersPerChat
        settings.warmupSeconds = warmup > 0 ? warmup : nil
        settings.changePercent = changes > 0 ? changes : nil
        settings.dtls = dtls ? true : nil
        let nodes = try self.nodes
        var options = Fleet.Options(
            settings: settings, serverHost: nodes[0].host, coapPort: nodes[0].coapPort, pushPort: nodes[0].pushPort,
            provisioning: Provisioning(adminURL: URL(string: admin)!, adminToken: token), prefix: prefix
        )
        options.otherNodes = Array(nodes.dropFirst())
        options.dtls = dtls
        if pushTls {
            do {
                options.pushTLS = try PushClient.tlsContext(trustedCAFile: ca, byAddress: nodes.allSatisfy { (try? SocketAddress(ipAddress: $0.host, port: 0)) != nil })
            } catch {
                throw ValidationError("--push-tls: \(error)")
            }
        }
        options.drainTimeout = .milliseconds(Int64(drainTimeout * 1000))
        options.settleTimeout = .milliseconds(Int64(settleTimeout * 1000))
        options.sourceHosts = sourceAddresses.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        if !quiet {
            let interactive = isatty(STDERR_FILENO) == 1
            options.progress = { line in
                FileHandle.standardError.write(Data((interactive ? "\r\u{1B}[K" + line : line + "\n").utf8))
            }
        }
        FileHandle.standardError.write(Data("courier-sim: \(settings.devices) devices, seed \(seed)\n".utf8))

        let report: SimulationReport
        do {
            report = try await Fleet(options: options).run()
        } catch {
            FileHandle.standardError.write(Data("courier-sim: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if !quiet && isatty(STDERR_FILENO) == 1 { FileHandle.standardError.write(Data("\n".utf8)) }
        print(ReportRendering.table(report))
        do {
            if let json { try ReportRendering.json(report).write(to: URL(fileURLWithPath: json)) }
            if let html { try Data(ReportRendering.html(report).utf8).write(to: URL(fileURLWithPath: html)) }
        } catch {
            FileHandle.standardError.write(Data("courier-sim: cannot write the report: \(error.localizedDescription)\n".utf8))
            throw ExitCode(2)
        }
        if !report.verdict.passed { throw ExitCode(1) }
        // Nothing wrong found, but a run that could not do what was asked proves less.
        if report.verdict.acknowledged == 0 {
            FileHandle.standardError.write(Data("courier-sim: no message was acknowledged, so the run proves nothing (are the gateways at \(settings.server)?)\n".utf8))
            throw ExitCode(2)
        }
        if report.devicesNotStarted > 0 {
            FileHandle.standardError.write(Data("courier-sim: \(report.devicesNotStarted) devices could not start (see transport failures)\n".utf8))
            throw ExitCode(2)
        }
    }
}
