package import SwiftProtobuf

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
    static var fields: FieldCheck { FieldCheck(type: Proto.protoMessageName) }

    /// Decodes, bounded in depth, then validates; the implementation of `WireMessage.init(serializedBytes:)`.
    init(wireBytes bytes: some Collection<UInt8>) throws(WireDecodingError) {
        try self.init(fromProto: try ProtobufWire.decode(Proto.self, bytes, schemaName: Self.schemaName))
    }

    /// Encodes the value; the implementation of `WireMessage.serializedBytes()`.
    func wireBytes() -> [UInt8] {
        ProtobufWire.encode(proto, schemaName: Self.schemaName)
    }
}

/// Protobuf binary with Courier's rules, for this module's types and for the server's own
/// records (Server/Proto), whose generated types live in the server's core.
package enum ProtobufWire {
    /// Decodes, bounded in depth, without keeping unknown fields.
    /// `schemaName` is only worked out for an error.
    package static func decode<Proto: SwiftProtobuf.Message>(_ type: Proto.Type, _ bytes: some Collection<UInt8>, schemaName: @autoclosure () -> String) throws(WireDecodingError) -> Proto {
        var options = BinaryDecodingOptions()
        // The schema nests at most three messages deep (ServerFrame > Push > ChatMessage); the bound
        // leaves room for growth and stops crafted input (such as deeply nested unknown groups) early.
        options.messageDepthLimit = 16
        // Unknown fields would be dropped by the conversion anyway; do not keep them in memory.
        options.discardUnknownFields = true
        do {
            return try Proto(serializedBytes: Array(bytes), options: options)
        } catch let error as BinaryDecodingError {
            throw .malformed(type: schemaName(), reason: explain(error))
        } catch {
            throw .malformed(type: schemaName(), reason: String(describing: error))
        }
    }

    /// Encodes `message`.
    package static func encode(_ message: some SwiftProtobuf.Message, schemaName: @autoclosure () -> String) -> [UInt8] {
        do {
            return try message.serializedBytes()
        } catch {
            // Binary encoding fails only for unset proto2 required fields, `Any` fields, or messages
            // over 2 GiB; the schema has none of the first two and input is bounded far below the last.
            fatalError("encoding \(schemaName()) failed: \(error)")
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
