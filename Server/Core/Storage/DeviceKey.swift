import Foundation

/// A device's pre-shared key for CoAP over DTLS (RFC 4279, RFC 7925): the identity the device
/// names in its handshake and the key both ends hold. Unlike a token, the server keeps the key
/// itself: a PSK handshake needs it, not a hash of it.
public struct DeviceKey: Sendable, Equatable {
    /// Keys are text: 128 random bits as 22 base64url characters, whose bytes are the key.
    /// Printable, because that is how tools take a key (libcoap's `-k` takes the key's bytes
    /// as written, with no hex form), and never starting with "-" (see `DeviceToken`).
    public static let keyBytes = 22
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
    /// bits, so a new key gets a new identity) and a new key.
    public static func generate(userID: UInt64, deviceID: UInt64) -> DeviceKey {
        var generator = SystemRandomNumberGenerator()
        let suffix = String(UInt64.random(in: 0...UInt64.max, using: &generator), radix: 16)
        return DeviceKey(identity: "\(deviceID)-\(suffix)", key: Array(DeviceToken.generate().utf8), userID: userID, deviceID: deviceID)
    }

    /// The key as the text it is.
    public var keyText: String { String(decoding: key, as: UTF8.self) }
}
