/// A CoAP option number (RFC 7252 §5.10, RFC 7959 §2.1).
public struct CoAPOptionNumber: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var rawValue: UInt16

    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Odd numbers are critical: a request carrying an unrecognized one is rejected (RFC 7252 §5.4.1).
    public var isCritical: Bool { rawValue & 1 == 1 }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "\(rawValue)" }

    public static let ifMatch = CoAPOptionNumber(rawValue: 1)
    public static let uriHost = CoAPOptionNumber(rawValue: 3)
    public static let eTag = CoAPOptionNumber(rawValue: 4)
    public static let ifNoneMatch = CoAPOptionNumber(rawValue: 5)
    public static let observe = CoAPOptionNumber(rawValue: 6)
    public static let uriPort = CoAPOptionNumber(rawValue: 7)
    public static let locationPath = CoAPOptionNumber(rawValue: 8)
    public static let uriPath = CoAPOptionNumber(rawValue: 11)
    public static let contentFormat = CoAPOptionNumber(rawValue: 12)
    public static let maxAge = CoAPOptionNumber(rawValue: 14)
    public static let uriQuery = CoAPOptionNumber(rawValue: 15)
    public static let accept = CoAPOptionNumber(rawValue: 17)
    public static let locationQuery = CoAPOptionNumber(rawValue: 20)
    public static let block2 = CoAPOptionNumber(rawValue: 23)
    public static let block1 = CoAPOptionNumber(rawValue: 27)
    public static let size2 = CoAPOptionNumber(rawValue: 28)
    public static let proxyUri = CoAPOptionNumber(rawValue: 35)
    public static let proxyScheme = CoAPOptionNumber(rawValue: 39)
    public static let size1 = CoAPOptionNumber(rawValue: 60)
}

/// One option instance: a number and its opaque value.
public struct CoAPOption: Sendable, Hashable {
    public var number: CoAPOptionNumber
    public var value: [UInt8]

    public init(number: CoAPOptionNumber, value: [UInt8]) {
        self.number = number
        self.value = value
    }

    public init(number: CoAPOptionNumber, string: String) {
        self.init(number: number, value: Array(string.utf8))
    }

    public init(number: CoAPOptionNumber, uint: UInt32) {
        self.init(number: number, value: Self.encodeUInt(uint))
    }

    /// The shortest big-endian form of `value`; zero is the empty string (RFC 7252 §3.2).
    public static func encodeUInt(_ value: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        var rest = value
        while rest != 0 {
            bytes.insert(UInt8(truncatingIfNeeded: rest), at: 0)
            rest >>= 8
        }
        return bytes
    }

    /// Reads a uint option; leading zero bytes are tolerated, and only the last four bytes count.
    public static func decodeUInt(_ bytes: [UInt8]) -> UInt32 {
        bytes.suffix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// Content-Format identifiers this project uses (RFC 7252 §12.3, IANA registry).
public enum CoAPContentFormat {
    public static let textPlain: UInt32 = 0
    public static let linkFormat: UInt32 = 40
    public static let octetStream: UInt32 = 42
    public static let json: UInt32 = 50
    /// application/x-protobuf has no IANA CoAP number; this is from the experimental range (65000-65535).
    public static let protobuf: UInt32 = 65_001
}
