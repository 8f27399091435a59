/// The first frame a device sends on a WebSocket session.
public struct Hello: Hashable, Sendable {
    /// The device token; may be empty when the upgrade request carried it (`?t=TOKEN`).
    public var token: String
    /// What the device holds, one cursor per chat; the server pushes what follows.
    public var have: [ChatCursor]
    /// Name and version of the client software, for logs (such as `courier/1.0`).
    public var clientName: String

    /// Creates a hello.
    public init(token: String, have: [ChatCursor], clientName: String) {
        self.token = token
        self.have = have
        self.clientName = clientName
    }
}
