/// The rule for chat and user names on the wire: 1 to 64 bytes of UTF-8, no control or format
/// characters (Unicode Cc, Cf), no leading or trailing whitespace. Names are compared exactly.
public enum NameRule {
    /// Longest name, in UTF-8 bytes.
    public static let maxBytes = 64

    /// Why `name` breaks the rule, for an error message; nil when it keeps it.
    public static func problem(with name: String) -> String? {
        guard let first = name.unicodeScalars.first, let last = name.unicodeScalars.last else { return "empty" }
        if name.utf8.count > maxBytes { return "longer than \(maxBytes) bytes" }
        if name.unicodeScalars.contains(where: { [.control, .format].contains($0.properties.generalCategory) }) {
            return "holds a control or format character"
        }
        if first.properties.isWhitespace || last.properties.isWhitespace { return "starts or ends with whitespace" }
        return nil
    }
}
