internal import SwiftProtobuf

/// A Courier value with a generated Protobuf counterpart; generated types never leave this module.
protocol ProtoConvertible {
    associatedtype Proto: SwiftProtobuf.Message

    /// Converts and validates a decoded message.
    init(fromProto proto: Proto) throws(WireDecodingError)

    /// The value as its generated message.
    var proto: Proto { get }
}

extension ProtoConvertible {
    /// The message's name in the schema, without the package (`SendMessage`).
    static var schemaName: String {
        let full = Proto.protoMessageName
        guard let dot = full.lastIndex(of: ".") else { return full }
        return String(full[full.index(after: dot)...])
    }

    /// Checks fields of this type, naming it in errors.
    static var fields: FieldCheck { FieldCheck(type: schemaName) }

    /// Decodes, bounded in depth, then validates; the implementation of `WireMessage.init(serializedBytes:)`.
    init(wireBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        var options = BinaryDecodingOptions()
        // The schema nests at most three messages deep (ServerFrame > Push > ChatMessage); the bound
        // leaves room for growth and stops crafted input (such as deeply nested unknown groups) early.
        options.messageDepthLimit = 16
        // Unknown fields would be dropped by the conversion anyway; do not keep them in memory.
        options.discardUnknownFields = true
        let decoded: Proto
        do {
            decoded = try Proto(serializedBytes: Array(bytes), options: options)
        } catch let error as BinaryDecodingError {
            throw .malformed(type: Self.schemaName, reason: Self.explain(error))
        } catch {
            throw .malformed(type: Self.schemaName, reason: String(describing: error))
        }
        try self.init(fromProto: decoded)
    }

    /// Encodes the value; the implementation of `WireMessage.serializedBytes()`.
    func wireBytes() -> [UInt8] {
        do {
            return try proto.serializedBytes()
        } catch {
            // Binary encoding fails only for unset proto2 required fields, `Any` fields, or messages
            // over 2 GiB; the schema has none of the first two and input is bounded far below the last.
            fatalError("encoding \(Self.schemaName) failed: \(error)")
        }
    }

    private static func explain(_ error: BinaryDecodingError) -> String {
        switch error {
        case .truncated: "the data ends in the middle of a field"
        case .invalidUTF8: "a string field is not valid UTF-8"
        case .malformedProtobuf: "the data is not valid Protobuf"
        case .messageDepthLimit: "messages are nested too deeply"
        case .trailingGarbage: "unexpected bytes after the message"
        case .missingRequiredFields: "required fields are missing"
        case .internalExtensionError: "an extension could not be decoded"
        @unknown default: String(describing: error)
        }
    }
}
