/// A redeemed invite: the new device and its token (shown only now).
public struct SignedIn: Hashable, Sendable {
    public var token: String
    public var userID: UInt64
    public var deviceID: UInt64
    public var userName: String

    public init(token: String, userID: UInt64, deviceID: UInt64, userName: String) {
        self.token = token
        self.userID = userID
        self.deviceID = deviceID
        self.userName = userName
    }
}
