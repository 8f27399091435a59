import CoAP
import CourierCore
import CourierLog
import CourierProtocol

/// A refusal of a device's request: the CoAP code and the Error body it is answered with.
/// Handlers and middleware throw it; the router answers it (and every other error) once.
struct Refusal: Error {
    var code: CoAPCode
    var wireCode: WireErrorCode
    var message: String
    /// Max-Age; a 5.03 without one gets the gateway's `retryAfterSeconds`.
    var retryAfter: UInt32 = 0
    /// What went wrong underneath, for the server's log (the device is told only `message`).
    var cause: (any Error)?

    init(_ code: CoAPCode, _ wireCode: WireErrorCode, _ message: String, retryAfter: UInt32 = 0, cause: (any Error)? = nil) {
        self.code = code
        self.wireCode = wireCode
        self.message = message
        self.retryAfter = retryAfter
        self.cause = cause
    }

    /// Worth retrying soon: the server could not answer now (`what` and the cause are logged).
    static func unavailable(_ what: String, cause: any Error) -> Refusal {
        Refusal(.serviceUnavailable, .overloaded, "try again", cause: RefusalCause(what: what, error: cause))
    }

    /// The answer, its Error body, and Max-Age when it is worth retrying.
    var response: CoAPMessage { Self.response(code, wireCode, message, retryAfter: retryAfter) }

    static func response(_ code: CoAPCode, _ wireCode: WireErrorCode, _ text: String, retryAfter: UInt32 = 0) -> CoAPMessage {
        var response = CoAPMessage.response(code, payload: WireError(code: wireCode, message: text, retryAfterSeconds: retryAfter).serializedBytes(), contentFormat: CoAPContentFormat.protobuf)
        if retryAfter > 0 { response.setUIntOption(.maxAge, retryAfter) }
        return response
    }

    /// An error as the device sees it: what it can act on, never the server's internals.
    static func from(_ error: any Error) -> Refusal {
        switch error {
        case let refusal as Refusal:
            return refusal
        case let error as StorageError:
            switch error {
            case .notFound(let what): return Refusal(.notFound, .notFound, "no \(what)")
            case .alreadyExists(let what): return Refusal(.conflict, .conflict, "\(what) exists already")
            case .invalid(let why): return Refusal(.badRequest, .badRequest, why)
            case .full: return Refusal(.serviceUnavailable, .storageFull, "storage is full; nothing was changed", retryAfter: 30, cause: error)
            case .rejected, .sequenceConflict: return Refusal(.internalServerError, .internalError, "nothing was changed", cause: error)
            case .unavailable: return Refusal(.serviceUnavailable, .overloaded, "try again", cause: error)
            }
        case let error as LogAppendError:
            switch error {
            case .overloaded(let seconds): return Refusal(.serviceUnavailable, .overloaded, "the log is busy", retryAfter: seconds)
            case .diskFull: return Refusal(.serviceUnavailable, .storageFull, "storage is full; nothing was stored", retryAfter: 30, cause: error)
            default: return Refusal(.internalServerError, .internalError, "nothing was stored", retryAfter: 1, cause: error)
            }
        default:
            return Refusal(.serviceUnavailable, .overloaded, "try again", cause: error)
        }
    }
}

/// A cause with the step that met it, as the log shows it.
struct RefusalCause: Error, CustomStringConvertible {
    var what: String
    var error: any Error
    var description: String { "\(what): \(error)" }
}
