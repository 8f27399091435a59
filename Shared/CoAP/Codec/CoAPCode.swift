/// A CoAP code, `c.dd` (RFC 7252 §3 and §12.1): 3-bit class, 5-bit detail.
public struct CoAPCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public init(_ codeClass: UInt8, _ detail: UInt8) {
        precondition(codeClass < 8 && detail < 32, "a CoAP code is c.dd with c < 8 and dd < 32")
        rawValue = codeClass << 5 | detail
    }

    public var codeClass: UInt8 { rawValue >> 5 }
    public var detail: UInt8 { rawValue & 0x1F }

    public var isRequest: Bool { codeClass == 0 && detail != 0 }
    public var isResponse: Bool { (2...5).contains(codeClass) }
    public var isSuccess: Bool { codeClass == 2 }
    /// Classes 1, 6 and 7 are reserved; a message carrying one is rejected.
    public var isReserved: Bool { codeClass == 1 || codeClass >= 6 }

    public var description: String {
        let detailText = detail < 10 ? "0\(detail)" : "\(detail)"
        return "\(codeClass).\(detailText)"
    }

    public static let empty = CoAPCode(0, 0)

    // Methods (RFC 7252 §12.1.1).
    public static let get = CoAPCode(0, 1)
    public static let post = CoAPCode(0, 2)
    public static let put = CoAPCode(0, 3)
    public static let delete = CoAPCode(0, 4)

    // Responses (RFC 7252 §12.1.2, RFC 7959 §2.9, RFC 8516).
    public static let created = CoAPCode(2, 1)
    public static let deleted = CoAPCode(2, 2)
    public static let valid = CoAPCode(2, 3)
    public static let changed = CoAPCode(2, 4)
    public static let content = CoAPCode(2, 5)
    public static let `continue` = CoAPCode(2, 31)
    public static let badRequest = CoAPCode(4, 0)
    public static let unauthorized = CoAPCode(4, 1)
    public static let badOption = CoAPCode(4, 2)
    public static let forbidden = CoAPCode(4, 3)
    public static let notFound = CoAPCode(4, 4)
    public static let methodNotAllowed = CoAPCode(4, 5)
    public static let notAcceptable = CoAPCode(4, 6)
    public static let requestEntityIncomplete = CoAPCode(4, 8)
    public static let preconditionFailed = CoAPCode(4, 12)
    public static let requestEntityTooLarge = CoAPCode(4, 13)
    public static let unsupportedContentFormat = CoAPCode(4, 15)
    /// RFC 8132: the request conflicts with the current state (a reused client message id).
    public static let conflict = CoAPCode(4, 9)
    public static let tooManyRequests = CoAPCode(4, 29)
    public static let internalServerError = CoAPCode(5, 0)
    public static let notImplemented = CoAPCode(5, 1)
    public static let badGateway = CoAPCode(5, 2)
    public static let serviceUnavailable = CoAPCode(5, 3)
    public static let gatewayTimeout = CoAPCode(5, 4)
    public static let proxyingNotSupported = CoAPCode(5, 5)
}
