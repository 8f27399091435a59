import ArgumentParser
import CoAP
import CourierSimulator
import Foundation

@main
struct SimulatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "courier-sim",
        abstract: "Courier's device simulator: put a fleet of devices on a server and check that nothing acknowledged was lost.",
        subcommands: [Run.self, Probe.self, Proxy.self],
        defaultSubcommand: Run.self
    )
}

func parseServer(_ text: String) throws -> HostAndPort {
    guard let address = HostAndPort(parsing: text) else { throw ValidationError("--server must be host[:port], got '\(text)'") }
    return address
}

struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a fleet of devices, each on its own UDP endpoint, on a server's gateway and report round trips."
    )

    @Option(help: "Server's CoAP gateway as host[:port].", transform: parseServer)
    var server = HostAndPort(host: "127.0.0.1")

    @Option(help: "Number of simulated devices.")
    var devices = 100

    @Option(help: "Health probes each device sends, one after another.")
    var probes = 10

    func validate() throws {
        guard (1...20_000).contains(devices) else { throw ValidationError("--devices must be 1-20000") }
        guard (1...100_000).contains(probes) else { throw ValidationError("--probes must be 1-100000") }
    }

    func run() async throws {
        let address = try server.socketAddress()
        let report = try await HealthFleet(devices: devices, probesPerDevice: probes).run(against: address)
        func format(_ value: Double?) -> String { value.map { "\(($0 * 100).rounded() / 100) ms" } ?? "-" }
        print("devices \(report.devices)  answered \(report.answered)/\(report.devices * probes)")
        print("round trip  p50 \(format(report.percentile(0.5)))  p90 \(format(report.percentile(0.9)))  p99 \(format(report.percentile(0.99)))  max \(format(report.roundTrips.last))")
        for (reason, count) in report.failures.sorted(by: { $0.key < $1.key }) { print("failed \(count): \(reason)") }
        if !report.failures.isEmpty { throw ExitCode(1) }
    }
}
