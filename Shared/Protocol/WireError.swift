/// A failed request as the server reports it: a CoAP 4.xx/5.xx body or a WebSocket error frame.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Why the request failed.
    public var code: WireErrorCode
    /// What went wrong, for a person to read; not meant to be parsed.
    public var message: String
    /// Earliest retry, in seconds from now; 0 when the server gives no hint.
    public var retryAfterSeconds: UInt32

    /// Creates an error.
    public init(code: WireErrorCode, message: String, retryAfterSeconds: UInt32 = 0) {
        self.code = code
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds
    }

    public var description: String {
        retryAfterSeconds == 0
            ? "\(code): \(message)"
            : "\(code): \(message) (retry after \(retryAfterSeconds) s)"
    }
}
