import Foundation

/// Rules every store applies the same way, whichever database is behind it.
public enum StorageRules {
    /// A user, device or chat name: trimmed, 1-64 bytes, no control characters.
    public static func validName(_ name: String, of kind: String) throws(StorageError) -> String {
        let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, trimmed.utf8.count <= 64 else { throw .invalid("a \(kind) name is 1-64 bytes") }
        guard !trimmed.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) }) else {
            throw .invalid("a \(kind) name has no control characters")
        }
        return trimmed
    }

    /// The words of a search, split on white space: at least one, at most 32, 1,024 bytes in all.
    public static func searchWords(_ words: String) throws(StorageError) -> [String] {
        let terms = words.split(whereSeparator: { $0.isWhitespace }).map(String.init)
        guard !terms.isEmpty else { throw .invalid("search needs at least one word") }
        guard terms.count <= 32, words.utf8.count <= 1024 else { throw .invalid("search is limited to 32 words and 1024 bytes") }
        return terms
    }
}
