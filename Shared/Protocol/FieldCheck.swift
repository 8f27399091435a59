/// Validates the fields of one decoded message, reporting errors against its schema name.
package struct FieldCheck {
    /// The message's name as given: the generated type's full name (`courier.v1.SendMessage`)
    /// is a constant, so a check costs no string work until it has an error to report.
    let name: String

    /// The message's name in the schema, without the package (`SendMessage`).
    var type: String {
        guard let dot = name.lastIndex(of: ".") else { return name }
        return String(name[name.index(after: dot)...])
    }

    package init(type: String) {
        name = type
    }

    /// A required id: 0 means not set.
    package func id(_ value: UInt64, _ field: String) throws(WireDecodingError) -> UInt64 {
        guard value != 0 else { throw .missingField(type: type, field: field) }
        return value
    }

    /// A required, bounded client message id.
    package func clientMessageID(_ value: String, _ field: String) throws(WireDecodingError) -> String {
        guard !value.isEmpty else { throw .missingField(type: type, field: field) }
        guard value.utf8.count <= SendMessage.maxClientMessageIDBytes else {
            throw .invalidField(
                type: type,
                field: field,
                reason: "longer than \(SendMessage.maxClientMessageIDBytes) bytes"
            )
        }
        return value
    }

    /// A required positive number (an interval, a size).
    package func positive(_ value: UInt32, _ field: String) throws(WireDecodingError) -> UInt32 {
        guard value != 0 else { throw .missingField(type: type, field: field) }
        return value
    }

    /// A required string: empty means not set.
    package func required(_ value: String, _ field: String) throws(WireDecodingError) -> String {
        guard !value.isEmpty else { throw .missingField(type: type, field: field) }
        return value
    }

    /// A required chat or user name that keeps `NameRule`.
    package func name(_ value: String, _ field: String) throws(WireDecodingError) -> String {
        let value = try required(value, field)
        if let problem = NameRule.problem(with: value) { throw .invalidField(type: type, field: field, reason: problem) }
        return value
    }

    /// A bounded list of names, each keeping `NameRule`.
    package func names(_ values: [String], _ field: String, atMost bound: Int) throws(WireDecodingError) -> [String] {
        guard values.count <= bound else { throw .invalidField(type: type, field: field, reason: "more than \(bound) names") }
        for (index, value) in values.enumerated() {
            if let problem = NameRule.problem(with: value) { throw .invalidField(type: type, field: "\(field)[\(index)]", reason: problem) }
        }
        return values
    }

    /// The case of a required oneof: nil means no case set, or one this version does not know.
    package func oneof<Case>(_ value: Case?, _ field: String) throws(WireDecodingError) -> Case {
        try present(value, field)
    }

    /// A required nested message: nil means not set.
    package func present<Value>(_ value: Value?, _ field: String) throws(WireDecodingError) -> Value {
        guard let value else { throw .missingField(type: type, field: field) }
        return value
    }

    /// A nested message, with its errors reported at `field` within this message.
    func nested<Value: ProtoConvertible>(
        _ proto: Value.Proto,
        as _: Value.Type,
        _ field: String
    ) throws(WireDecodingError) -> Value {
        do {
            return try Value(fromProto: proto)
        } catch {
            throw error.nested(in: type, at: field)
        }
    }

    /// A repeated nested message, with errors reported at `field[index]`.
    func list<Value: ProtoConvertible>(
        _ protos: [Value.Proto],
        of _: Value.Type,
        _ field: String
    ) throws(WireDecodingError) -> [Value] {
        var values: [Value] = []
        values.reserveCapacity(protos.count)
        for (index, proto) in protos.enumerated() {
            values.append(try nested(proto, as: Value.self, "\(field)[\(index)]"))
        }
        return values
    }
}
