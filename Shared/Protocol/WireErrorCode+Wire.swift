extension WireErrorCode {
    init(fromProto proto: Courier_V1_ErrorCode) {
        switch proto {
        case .unspecified: self = .unspecified
        case .badRequest: self = .badRequest
        case .unauthorized: self = .unauthorized
        case .forbidden: self = .forbidden
        case .notFound: self = .notFound
        case .tooLarge: self = .tooLarge
        case .overloaded: self = .overloaded
        case .rateLimited: self = .rateLimited
        case .internal: self = .internalError
        case .storageFull: self = .storageFull
        case .conflict: self = .conflict
        case .sessionReplaced: self = .sessionReplaced
        case .UNRECOGNIZED(let value): self = .unrecognized(value)
        }
    }

    var proto: Courier_V1_ErrorCode {
        switch self {
        case .unspecified: .unspecified
        case .badRequest: .badRequest
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .tooLarge: .tooLarge
        case .overloaded: .overloaded
        case .rateLimited: .rateLimited
        case .internalError: .internal
        case .storageFull: .storageFull
        case .conflict: .conflict
        case .sessionReplaced: .sessionReplaced
        // The generated enum maps known values back to their cases on decode, so this stays lossless.
        case .unrecognized(let value): Courier_V1_ErrorCode(rawValue: value) ?? .UNRECOGNIZED(value)
        }
    }
}
