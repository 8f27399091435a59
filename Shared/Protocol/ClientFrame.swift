/// One WebSocket frame from device to server.
public enum ClientFrame: Hashable, Sendable {
    /// Opens the session; the first frame and only the first.
    case hello(Hello)
    /// Acknowledges pushed messages.
    case ack(PushAck)
    /// Keeps the session alive.
    case heartbeat(Heartbeat)
    /// Asks for missing messages; answered with `ServerFrame.sync`.
    case sync(SyncRequest)
}
