/// The server's answer to `Hello`: the session is open.
public struct Welcome: Hashable, Sendable {
    /// The user the token belongs to.
    public var userID: UInt64
    /// The device the token belongs to.
    public var deviceID: UInt64
    /// The device sends a heartbeat (or another frame) at least this often, in milliseconds.
    public var heartbeatIntervalMs: UInt32
    /// The server's clock when it sent this (ms since the Unix epoch).
    public var serverTimeMs: Int64
    /// Largest WebSocket frame payload the server accepts, in bytes.
    public var maxFrameBytes: UInt32

    /// Creates a welcome.
    public init(
        userID: UInt64,
        deviceID: UInt64,
        heartbeatIntervalMs: UInt32,
        serverTimeMs: Int64,
        maxFrameBytes: UInt32
    ) {
        self.userID = userID
        self.deviceID = deviceID
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.serverTimeMs = serverTimeMs
        self.maxFrameBytes = maxFrameBytes
    }
}
