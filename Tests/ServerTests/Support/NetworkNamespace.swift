import Foundation
import TestSupport
import XCTest

/// Two network namespaces joined by a veth pair, `serverAddress` (10.201.X.1/24) in one and
/// `deviceAddress` (.2) in the other, named uniquely per run. Made with `ip`; faults with
/// iptables inside each namespace, so nothing touches the machine's own network.
struct NetworkNamespacePair: Sendable {
    let serverNamespace: String
    let deviceNamespace: String
    let serverAddress: String
    let deviceAddress: String
    private let ip: String
    private let iptables: String

    /// Creates the pair, or throws XCTSkip naming what is missing (not root, no `ip`, no
    /// iptables, no permission to make namespaces).
    static func create() async throws -> NetworkNamespacePair {
        guard geteuid() == 0 else { throw XCTSkip("network namespaces need root (CAP_NET_ADMIN)") }
        let ip: String
        let iptables: String
        do {
            ip = try ExternalProgram.locate("ip", hint: "apt-get install iproute2 (scripts/install-deps)")
            iptables = try ExternalProgram.locate("iptables", hint: "apt-get install iptables (scripts/install-deps)")
        } catch {
            throw XCTSkip("\(error)")
        }
        let tag = String(UInt32.random(in: 0 ... .max), radix: 36)
        let subnet = Int.random(in: 1...254)
        // Both ends live inside the namespaces, so the subnet cannot clash with the host's.
        let pair = NetworkNamespacePair(
            serverNamespace: "courier-s-\(tag)", deviceNamespace: "courier-d-\(tag)",
            serverAddress: "10.201.\(subnet).1", deviceAddress: "10.201.\(subnet).2", ip: ip, iptables: iptables
        )
        let serverEnd = "cs\(tag)"
        let deviceEnd = "cd\(tag)"
        do {
            try await pair.run(ip, ["netns", "add", pair.serverNamespace])
        } catch {
            throw XCTSkip("cannot create a network namespace here: \(error)")
        }
        do {
            try await pair.run(ip, ["netns", "add", pair.deviceNamespace])
            try await pair.run(ip, ["link", "add", serverEnd, "type", "veth", "peer", "name", deviceEnd])
            try await pair.run(ip, ["link", "set", serverEnd, "netns", pair.serverNamespace])
            try await pair.run(ip, ["link", "set", deviceEnd, "netns", pair.deviceNamespace])
            for (namespace, end, address) in [(pair.serverNamespace, serverEnd, pair.serverAddress), (pair.deviceNamespace, deviceEnd, pair.deviceAddress)] {
                try await pair.run(ip, ["-n", namespace, "addr", "add", "\(address)/24", "dev", end])
                try await pair.run(ip, ["-n", namespace, "link", "set", end, "up"])
                try await pair.run(ip, ["-n", namespace, "link", "set", "lo", "up"])
            }
        } catch {
            await pair.destroy()
            throw error
        }
        return pair
    }

    /// The command line that runs `arguments` inside `namespace`.
    func exec(in namespace: String, _ arguments: [String]) -> (String, [String]) {
        (ip, ["netns", "exec", namespace] + arguments)
    }

    /// Runs a command inside `namespace` to its end.
    func run(in namespace: String, _ arguments: [String], timeout: Double = 30) async throws -> ExternalProgram.Output {
        let (executable, full) = exec(in: namespace, arguments)
        return try await ExternalProgram.run(executable, full, timeout: timeout)
    }

    /// Drops `probability` of the packets (every protocol) arriving in each namespace, at random:
    /// iptables' `statistic` match, the loss tc netem would give on kernels that have it.
    func dropRandomly(_ probability: Double) async throws {
        for namespace in [serverNamespace, deviceNamespace] {
            try await run(ip, ["netns", "exec", namespace, iptables, "-A", "INPUT", "-m", "statistic", "--mode", "random", "--probability", "\(probability)", "-j", "DROP"])
        }
    }

    /// Packets dropped so far by the rules `dropRandomly` added, per namespace.
    func droppedPackets() async -> [String: Int] {
        var dropped: [String: Int] = [:]
        for namespace in [serverNamespace, deviceNamespace] {
            let output = try? await run(in: namespace, [iptables, "-L", "INPUT", "-v", "-n", "-x"])
            // "    pkts      bytes target ..." rows; the DROP row's first column.
            let row = output?.text.split(separator: "\n").first { $0.contains("DROP") && $0.contains("statistic") }
            dropped[namespace] = row.flatMap { Int($0.split(separator: " ").first ?? "") } ?? -1
        }
        return dropped
    }

    /// Deletes both namespaces (the veth pair goes with them). Processes inside must be stopped
    /// first: a namespace with a process in it lingers until the process ends.
    func destroy() async {
        for namespace in [serverNamespace, deviceNamespace] {
            _ = try? await ExternalProgram.run(ip, ["netns", "delete", namespace])
        }
    }

    private func run(_ executable: String, _ arguments: [String]) async throws {
        let output = try await ExternalProgram.run(executable, arguments)
        guard output.status == 0 else {
            throw ServerTestError("\(([executable] + arguments).joined(separator: " ")) exited \(output.status): \(output.stderr)")
        }
    }
}

/// Runs `body` with a fresh namespace pair, deleted however `body` ends.
func withNetworkNamespaces<T>(_ body: (NetworkNamespacePair) async throws -> T) async throws -> T {
    let pair = try await NetworkNamespacePair.create()
    do {
        let result = try await body(pair)
        await pair.destroy()
        return result
    } catch {
        await pair.destroy()
        throw error
    }
}
