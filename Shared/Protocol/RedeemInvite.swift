/// Signs in with a one-time invite code (`POST /v1/login`, no token): the device named here is
/// created for the invite's user, and its token comes back in a `SignedIn`.
public struct RedeemInvite: Hashable, Sendable {
    /// Longest code accepted (the server's codes are 22 characters).
    public static let maxCodeBytes = 64

    /// The code `courier-server invite` printed.
    public var code: String
    /// The new device's name, unique among the user's devices.
    public var deviceName: String

    public init(code: String, deviceName: String) {
        self.code = code
        self.deviceName = deviceName
    }
}
