import Crypto
import Foundation

/// Device tokens: 128 random bits, written as 22 base64url characters so that the Uri-Query
/// option carrying one on every CoAP request stays small. Only a SHA-256 hash is stored: the
/// tokens are random, not passwords, so a fast hash loses nothing and a stolen database holds
/// no usable token.
public enum DeviceToken {
    public static let randomBytes = 16
    /// Longest text accepted as a token before hashing; longer input is refused unhashed.
    public static let maxLength = 64

    /// A new token from the system's cryptographic random source. It never starts with "-"
    /// or "_", so it can follow a command-line option without being taken for one (redrawing
    /// costs 0.05 bits of the 128).
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        while true {
            let bytes = (0..<randomBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Base64 to base64url in one pass (a provision issues tens of thousands at once).
            let token = Data(bytes).base64EncodedString().utf8.compactMap { byte -> UInt8? in
                switch byte {
                case UInt8(ascii: "+"): UInt8(ascii: "-")
                case UInt8(ascii: "/"): UInt8(ascii: "_")
                case UInt8(ascii: "="): nil
                default: byte
                }
            }
            if token[0] != UInt8(ascii: "-"), token[0] != UInt8(ascii: "_") { return String(decoding: token, as: UTF8.self) }
        }
    }

    /// What the database keys a token by.
    public static func hash(_ token: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(token.utf8)))
    }
}
