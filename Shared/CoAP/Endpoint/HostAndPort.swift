import NIOCore

/// A peer as given on a command line, `host[:port]`, with CoAP's default port 5683.
public struct HostAndPort: Sendable, Hashable, CustomStringConvertible {
    public static let defaultCoAPPort = 5683
    /// CoAP over DTLS's default port (RFC 7252 12.7).
    public static let defaultCoAPSPort = 5684

    public var host: String
    public var port: Int

    public init(host: String, port: Int = Self.defaultCoAPPort) {
        self.host = host
        self.port = port
    }

    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`; nil when the text is none of these.
    public init?(parsing text: String) {
        var host = Substring(text)
        var port = Self.defaultCoAPPort
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let parsed = Int(rest.dropFirst()) else { return nil }
                port = parsed
            }
        } else if let colon = host.lastIndex(of: ":") {
            guard let parsed = Int(host[host.index(after: colon)...]) else { return nil }
            port = parsed
            host = host[..<colon]
        }
        guard !host.isEmpty, (1...65_535).contains(port) else { return nil }
        self.init(host: String(host), port: port)
    }

    /// Resolves to a socket address (numeric addresses and host names).
    public func socketAddress() throws -> SocketAddress {
        if let numeric = try? SocketAddress(ipAddress: host, port: port) { return numeric }
        return try SocketAddress.makeAddressResolvingHost(host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
