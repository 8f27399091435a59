/// Keeps a WebSocket session alive; the server answers each device heartbeat with its own.
public struct Heartbeat: Hashable, Sendable {
    /// When the sender sent it, by the sender's clock (ms since the Unix epoch).
    public var sentAtMs: Int64

    /// Creates a heartbeat.
    public init(sentAtMs: Int64) {
        self.sentAtMs = sentAtMs
    }
}
