/// Why bytes could not be decoded into a Courier wire value; its description is fit for a 4.00 payload.
public enum WireDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The bytes are not valid Protobuf for `type` (truncated, wrong wire type, bad UTF-8, nested too deeply...).
    case malformed(type: String, reason: String)

    /// A required field of `type` is not set: a zero id, an empty string, or a oneof with no case.
    ///
    /// `field` is the path within `type` in schema names, such as `chat_id` or `have[2].chat_id`.
    case missingField(type: String, field: String)

    /// A field of `type` holds a value the contract does not allow.
    case invalidField(type: String, field: String, reason: String)

    /// The schema name of the top-level message being decoded, such as `SendMessage`.
    public var type: String {
        switch self {
        case .malformed(let type, _), .missingField(let type, _), .invalidField(let type, _, _):
            type
        }
    }

    public var description: String {
        switch self {
        case .malformed(let type, let reason):
            "malformed \(type): \(reason)"
        case .missingField(let type, let field):
            "missing required field \(type).\(field)"
        case .invalidField(let type, let field, let reason):
            "invalid field \(type).\(field): \(reason)"
        }
    }

    /// The same error reported from inside `outer`, where it was decoded at `path` (such as `have[2]`).
    func nested(in outer: String, at path: String) -> WireDecodingError {
        switch self {
        case .malformed(_, let reason):
            .malformed(type: outer, reason: "\(path): \(reason)")
        case .missingField(_, let field):
            .missingField(type: outer, field: "\(path).\(field)")
        case .invalidField(_, let field, let reason):
            .invalidField(type: outer, field: "\(path).\(field)", reason: reason)
        }
    }
}
