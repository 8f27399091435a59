/// Why the admin API refused a request, with a message for the person who sent it. The HTTP
/// listener maps each case to its status once.
public enum AdminRefusal: Error, Sendable, Equatable {
    /// No token, or not the admin token: 401.
    case unauthorized(String)
    /// The request is wrong as sent (a field out of range, not JSON, too large): 400.
    case badRequest(String)
    /// Storage is busy or full; trying again later may help: 503.
    case unavailable(String)
    /// A bug or damage: 500.
    case failed(String)

    public var message: String {
        switch self {
        case .unauthorized(let message), .badRequest(let message), .unavailable(let message), .failed(let message): message
        }
    }
}
