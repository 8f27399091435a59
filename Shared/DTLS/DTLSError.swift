import CDTLS

/// A DTLS setup or handshake failure, with OpenSSL's reason when it gave one.
public struct DTLSError: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }

    /// `what`, followed by the oldest error on OpenSSL's queue (which this clears).
    static func openSSL(_ what: String) -> DTLSError {
        let reason = lastOpenSSLError()
        return DTLSError(reason.isEmpty ? what : "\(what): \(reason)")
    }
}

/// The oldest error on this thread's OpenSSL queue as text (empty when none); clears the queue.
func lastOpenSSLError() -> String {
    var text = [CChar](repeating: 0, count: 256)
    cdtls_last_error(&text, text.count)
    return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
