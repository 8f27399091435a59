import Glibc
import Synchronization

/// Ports already handed out in this process: a port is closed again as soon as it is checked,
/// so without this two servers of one test could be given the same one.
private let portsHandedOut = Mutex<Set<Int>>([])

/// A port that nothing listens on now, for TCP and UDP on every address. Chosen at random below
/// the kernel's ephemeral range (32768–60999): a port the kernel picked (port 0) can be taken
/// by any outgoing connection between this check and the server's bind, and was (a push port
/// "already in use" in CI).
public func freePort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 10_000..<32_000)
        guard portsHandedOut.withLock({ $0.insert(port).inserted }) else { continue }
        if canBind(port, type: SOCK_STREAM) && canBind(port, type: SOCK_DGRAM) { return port }
    }
    throw PortFailure(description: "no free port below 32000 after 200 tries")
}

/// The first of `count` consecutive ports that nothing listens on now (for a script that
/// numbers its listeners from a base), below the ephemeral range like `freePort`.
public func freePortRun(count: Int) throws -> Int {
    for _ in 0..<200 {
        let base = Int.random(in: 10_000..<(32_000 - count))
        let run = Set(base..<(base + count))
        guard portsHandedOut.withLock({ handedOut in
            guard handedOut.isDisjoint(with: run) else { return false }
            handedOut.formUnion(run)
            return true
        }) else { continue }
        if run.allSatisfy({ canBind($0, type: SOCK_STREAM) && canBind($0, type: SOCK_DGRAM) }) { return base }
    }
    throw PortFailure(description: "no \(count) free consecutive ports below 32000 after 200 tries")
}

public func freeUDPPort() async throws -> Int { try freePort() }

public func freeTCPPort() async throws -> Int { try freePort() }

public struct PortFailure: Error, CustomStringConvertible {
    public let description: String
}

private func canBind(_ port: Int, type: __socket_type) -> Bool {
    let socket = Glibc.socket(AF_INET, Int32(type.rawValue), 0)
    guard socket >= 0 else { return false }
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = INADDR_ANY
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
