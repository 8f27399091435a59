import ArgumentParser
import CoAP
import CourierSimulator
import Foundation
import NIOCore

/// `courier-sim proxy`: a seeded UDP fault proxy between devices and a server's gateway.
struct Proxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Relay UDP between devices and a server, dropping, duplicating, reordering and delaying datagrams both ways.",
        discussion: """
        Point devices at --listen; each device address gets its own socket towards --upstream. \
        Rates are percentages, drawn for every datagram in each direction from one generator \
        seeded with --seed (printed at start: the same seed and the same arrivals replay the same \
        faults). --partition-at S --partition-for D drops everything for D seconds from S seconds \
        after start. --late-duplicate P keeps a copy of P% of datagrams and sends it again \
        --late-after seconds later (past CoAP's EXCHANGE_LIFETIME of 247 s, only the \
        application's dedup catches it). Counters are printed at the end (--duration, SIGINT or \
        SIGTERM) and written to --stats-json.
        """
    )

    @Option(help: "Address devices send to, as host:port.", transform: parseServer)
    var listen = HostAndPort(host: "127.0.0.1", port: 5684)

    @Option(help: "The server's CoAP gateway, as host[:port].", transform: parseServer)
    var upstream = HostAndPort(host: "127.0.0.1")

    @Option(help: "Percent of datagrams dropped, each way.") var drop = 0.0
    @Option(help: "Percent of datagrams sent twice, each way.") var duplicate = 0.0
    @Option(help: "Percent of datagrams held back until the next one in the same direction has gone.") var reorder = 0.0
    @Option(help: "Delay of every datagram in milliseconds: MS, or MIN-MAX drawn uniformly.") var delay = "0"
    @Option(help: "Seed for every fault (default: random; printed).") var seed: UInt64?
    @Option(help: "Seconds after start when a partition begins (everything dropped).") var partitionAt: Double?
    @Option(help: "Seconds the partition lasts.") var partitionFor: Double?
    @Option(help: "Percent of datagrams sent once more --late-after seconds later.") var lateDuplicate = 0.0
    @Option(help: "Seconds until a late duplicate is sent.") var lateAfter = 250.0
    @Option(help: "Most datagrams held for late duplicates; past it no new copy is kept.") var maxLateDuplicates = 10_000
    @Option(help: "Most devices relayed at once; datagrams from more are dropped until one is idle.") var maxClients = 4_096
    @Option(help: "Seconds after which a silent device's upstream socket is closed.") var idleTimeout = 300.0
    @Option(help: "Stop after this many seconds (default: run until SIGINT or SIGTERM).") var duration: Double?
    @Option(help: "Write the counters as JSON to this file when stopping.") var statsJson: String?

    /// `--delay` as a range of milliseconds.
    var delayRange: ClosedRange<Double>? {
        let parts = delay.split(separator: "-", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.allSatisfy({ $0 != nil }), let low = parts.first ?? nil, let high = parts.last ?? nil, parts.count <= 2, low >= 0, low <= high else { return nil }
        return low...high
    }

    func validate() throws {
        func check(_ condition: Bool, _ message: String) throws { if !condition { throw ValidationError(message) } }
        for (name, value) in [("drop", drop), ("duplicate", duplicate), ("reorder", reorder), ("late-duplicate", lateDuplicate)] {
            try check((0...100).contains(value), "--\(name) must be a percentage, 0-100")
        }
        try check(delayRange.map { $0.upperBound <= 60_000 } ?? false, "--delay must be MS or MIN-MAX milliseconds, at most 60000, got '\(delay)'")
        try check((partitionAt == nil) == (partitionFor == nil), "give --partition-at and --partition-for together")
        try check(partitionAt.map { $0 >= 0 } ?? true && partitionFor.map { $0 > 0 } ?? true, "--partition-at must be 0 or more and --partition-for above 0")
        try check(lateAfter > 0 && lateAfter <= 86_400, "--late-after must be above 0 and at most 86400")
        try check((1...1_000_000).contains(maxLateDuplicates), "--max-late-duplicates must be 1-1000000")
        try check((1...100_000).contains(maxClients), "--max-clients must be 1-100000")
        try check(idleTimeout > 0, "--idle-timeout must be above 0")
        try check(duration.map { $0 > 0 } ?? true, "--duration must be above 0")
    }

    func run() async throws {
        let seed = seed ?? UInt64.random(in: 1 ... .max)
        var plan = FaultProxyPlan(seed: seed)
        plan.drop = drop / 100
        plan.duplicate = duplicate / 100
        plan.reorder = reorder / 100
        let range = delayRange!
        plan.delay = .milliseconds(range.lowerBound) ... .milliseconds(range.upperBound)
        plan.lateDuplicate = lateDuplicate / 100
        plan.lateAfter = .milliseconds(lateAfter * 1000)
        plan.maxLateDuplicates = maxLateDuplicates
        if let partitionAt, let partitionFor {
            plan.partition = .milliseconds(partitionAt * 1000) ..< .milliseconds((partitionAt + partitionFor) * 1000)
        }
        var configuration = FaultProxy.Configuration(listenHost: listen.host, listenPort: listen.port, upstream: try upstream.socketAddress(), plan: plan)
        configuration.maxClients = maxClients
        configuration.idleTimeout = .milliseconds(idleTimeout * 1000)

        // Stop on SIGINT/SIGTERM as at the end of --duration: print and write the counters.
        let stopping = AsyncStream<String>.makeStream()
        let signalQueue = DispatchQueue(label: "courier-sim.proxy.signals")
        let sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: signalQueue)
            source.setEventHandler { stopping.continuation.yield(number == SIGINT ? "SIGINT" : "SIGTERM") }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }

        let proxy: FaultProxy
        do {
            proxy = try await FaultProxy.start(configuration)
        } catch {
            FileHandle.standardError.write(Data("courier-sim proxy: cannot listen on \(listen): \(error)\n".utf8))
            throw ExitCode(2)
        }
        say("courier-sim proxy: seed \(seed) — replay with --seed \(seed)")
        say("courier-sim proxy: listening on \(proxy.localAddress.ipAddress ?? listen.host):\(proxy.localAddress.port ?? listen.port), relaying to \(upstream)")

        if let duration {
            let continuation = stopping.continuation
            Task {
                try? await Task.sleep(for: .milliseconds(duration * 1000))
                continuation.yield("end of --duration")
            }
        }
        var reason = "stopped"
        for await why in stopping.stream {
            reason = why
            break
        }
        let report = await proxy.report()
        await proxy.stop()
        say("courier-sim proxy: \(reason); seed \(seed)")
        say("  device -> server: \(report.upstream.summary)")
        say("  server -> device: \(report.downstream.summary)")
        say("  total:            \(report.total.summary)")
        say("  devices \(report.clients) (open \(report.openClients), refused \(report.clientsRefused), expired \(report.clientsExpired)), send failures \(report.sendFailures), delays skipped at the bound \(report.delaysSkipped)")
        if let statsJson {
            do {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                encoder.keyEncodingStrategy = .convertToSnakeCase
                try encoder.encode(report).write(to: URL(fileURLWithPath: statsJson), options: .atomic)
            } catch {
                FileHandle.standardError.write(Data("courier-sim proxy: cannot write \(statsJson): \(error.localizedDescription)\n".utf8))
                throw ExitCode(2)
            }
        }
    }
}

/// One line on standard output at once, unbuffered: a test or script reads the seed while the
/// proxy runs.
private func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
