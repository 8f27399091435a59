/// One WebSocket frame from server to device.
public enum ServerFrame: Hashable, Sendable {
    /// Answers `Hello`: the session is open.
    case welcome(Welcome)
    /// A pushed message or receipt.
    case push(Push)
    /// Answers the device's heartbeat.
    case heartbeat(Heartbeat)
    /// Answers a `SyncRequest`.
    case sync(SyncResponse)
    /// Something went wrong; if the session cannot go on, the server closes it after this frame.
    case error(WireError)
}
