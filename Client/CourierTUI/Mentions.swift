/// `@name` in messages: whether a message mentions someone, and completing a name being typed.
public enum Mentions {
    /// Whether `text` holds `@name` (letters compared without case), with the name not running
    /// on into more of a name ("@al" does not mention "alice", "@alice," does).
    public static func text(_ text: String, mentions name: String) -> Bool {
        guard !name.isEmpty else { return false }
        let wanted = Array("@" + name.lowercased())
        let characters = Array(text.lowercased())
        guard characters.count >= wanted.count else { return false }
        for start in 0...(characters.count - wanted.count) where characters[start] == "@" {
            guard Array(characters[start..<start + wanted.count]) == wanted else { continue }
            let after = start + wanted.count
            if after == characters.count || !continuesName(characters[after]) { return true }
        }
        return false
    }

    /// The names that complete `prefix` (what follows an "@" being typed), in byte order.
    public static func completions(of prefix: String, among names: some Sequence<String>) -> [String] {
        let lowered = prefix.lowercased()
        return Set(names).filter { $0.lowercased().hasPrefix(lowered) }.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// The "@word" that ends at `cursor` in `line`: where its name starts and the name so far.
    /// nil when the word before the cursor does not start with "@".
    public static func nameBeingTyped(in line: [Character], cursor: Int) -> (start: Int, prefix: String)? {
        var start = cursor
        while start > 0, continuesName(line[start - 1]) || line[start - 1] == "." { start -= 1 }
        guard start > 0, line[start - 1] == "@" else { return nil }
        // "@" starts a mention only at the line's start or after a space (not in "a@b").
        guard start == 1 || line[start - 2].isWhitespace else { return nil }
        return (start, String(line[start..<cursor]))
    }

    /// Whether a character after "@name" makes it a longer name; a space or punctuation (a
    /// full stop too) ends the mention.
    static func continuesName(_ character: Character) -> Bool {
        character.isLetter || character.isNumber || character == "_" || character == "-"
    }
}
