/// Why a request got no response.
public enum CoAPClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No ACK after MAX_RETRANSMIT retransmissions.
    case timeout
    /// The peer rejected the message with RST.
    case reset
    /// An empty ACK came, but the separate response did not within the timeout.
    case separateResponseTimeout
    /// Too many requests already wait; the bound is `maxPendingRequests`.
    case tooManyPendingRequests
    /// The endpoint was closed.
    case closed
    /// The caller was cancelled.
    case cancelled
    /// The peer broke the block-wise protocol (RFC 7959).
    case blockwise(String)
    /// The request cannot be sent as given.
    case invalidRequest(String)

    public var description: String {
        switch self {
        case .timeout: "no acknowledgement from the peer (gave up after MAX_RETRANSMIT retransmissions)"
        case .reset: "the peer reset the exchange"
        case .separateResponseTimeout: "the peer acknowledged but never sent its response"
        case .tooManyPendingRequests: "too many requests are already waiting"
        case .closed: "the endpoint is closed"
        case .cancelled: "the request was cancelled"
        case .blockwise(let detail): "block-wise transfer failed: \(detail)"
        case .invalidRequest(let detail): "invalid request: \(detail)"
        }
    }
}
