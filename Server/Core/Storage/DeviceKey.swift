import Foundation

/// A device's pre-shared key for CoAP over DTLS (RFC 4279, RFC 7925): the identity the device
/// names in its handshake and the key both ends hold. Unlike a token, the server keeps the key
/// itself: a PSK handshake needs it, not a hash of it.
public struct DeviceKey: Sendable, Equatable {
    public static let keyBytes = 16
    /// Longest identity a handshake may name (RFC 7925 4.2 asks identities to be short).
    public static let maxIdentityLength = 64

    public var identity: String
    public var key: [UInt8]
    public var userID: UInt64
    public var deviceID: UInt64

    public init(identity: String, key: [UInt8], userID: UInt64, deviceID: UInt64) {
        self.identity = identity
        self.key = key
        self.userID = userID
        self.deviceID = deviceID
    }

    /// A new identity for the device (its id, so logs can tell devices apart, and 64 random
    /// bits, so a new key gets a new identity) and a new 128-bit key.
    public static func generate(userID: UInt64, deviceID: UInt64) -> DeviceKey {
        var generator = SystemRandomNumberGenerator()
        let suffix = String(UInt64.random(in: 0...UInt64.max, using: &generator), radix: 16)
        let key = (0..<keyBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return DeviceKey(identity: "\(deviceID)-\(suffix)", key: key, userID: userID, deviceID: deviceID)
    }

    /// The key as lowercase hex, as libcoap's `-k 0x...` and the admin output give it.
    public var hexKey: String { key.map { String(format: "%02x", $0) }.joined() }
}
