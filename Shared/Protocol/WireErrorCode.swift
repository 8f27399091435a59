/// Why a request failed; each case documents its CoAP code and whether to retry (see error.proto).
public enum WireErrorCode: Hashable, Sendable {
    /// Not set; never sent on purpose.
    case unspecified
    /// Malformed request or a required field missing or invalid (4.00); do not retry.
    case badRequest
    /// Missing, unknown or revoked device token (4.01); do not retry with the same token.
    case unauthorized
    /// The device may not do this, such as sending into a chat it is not in (4.03); do not retry.
    case forbidden
    /// The path or the named object does not exist (4.04); do not retry.
    case notFound
    /// The request or a field is too large (4.13); do not retry.
    case tooLarge
    /// The server is overloaded (5.03 with Max-Age); retry after `retryAfterSeconds`, with backoff.
    case overloaded
    /// The device or user sends too fast (4.29); retry after `retryAfterSeconds`.
    case rateLimited
    /// The server failed unexpectedly and stored nothing (5.00); retry later, with backoff.
    case internalError
    /// The server's storage is full and it stored nothing (5.03); retry later, with backoff.
    case storageFull
    /// The client message id was already used for a different message (4.09); choose a new id.
    case conflict
    /// WebSocket only: another session of the same device replaced this one; do not reconnect.
    case sessionReplaced
    /// A code this version does not know, with its wire value; judge it by the transport's status.
    case unrecognized(Int)
}
