/// The input line: editing keys as in a shell (readline's common ones) and a history of what
/// was entered. Knows nothing of curses, so it is tested on its own.
public struct LineEditor: Sendable, Equatable {
    /// Entries kept for Up/Down; the oldest goes first past it.
    public static let historyLimit = 500

    public private(set) var text: [Character] = []
    /// Index in `text` where the next character goes.
    public private(set) var cursor = 0
    public private(set) var history: [String] = []
    /// While browsing history: the entry shown, and what was being typed before.
    private var browsing: Int?
    private var draft: [Character] = []

    public init() {}

    public var line: String { String(text) }

    public mutating func insert(_ character: Character) {
        text.insert(character, at: cursor)
        cursor += 1
    }

    public mutating func backspace() {
        guard cursor > 0 else { return }
        cursor -= 1
        text.remove(at: cursor)
    }

    public mutating func deleteForward() {
        guard cursor < text.count else { return }
        text.remove(at: cursor)
    }

    public mutating func left() { cursor = max(0, cursor - 1) }
    public mutating func right() { cursor = min(text.count, cursor + 1) }
    public mutating func home() { cursor = 0 }
    public mutating func end() { cursor = text.count }

    /// Puts `replacement` in place of what lies between `start` and the cursor, and the cursor
    /// after it (a completed name).
    public mutating func replaceBeforeCursor(from start: Int, with replacement: String) {
        let start = min(max(0, start), cursor)
        text.replaceSubrange(start..<cursor, with: Array(replacement))
        cursor = start + replacement.count
    }

    /// Ctrl-U: everything before the cursor.
    public mutating func killToStart() {
        text.removeSubrange(0..<cursor)
        cursor = 0
    }

    /// Ctrl-K: everything from the cursor on.
    public mutating func killToEnd() {
        text.removeSubrange(cursor...)
    }

    /// Ctrl-W: the word before the cursor, and the spaces after it.
    public mutating func deleteWordBackward() {
        var start = cursor
        while start > 0 && text[start - 1] == " " { start -= 1 }
        while start > 0 && text[start - 1] != " " { start -= 1 }
        text.removeSubrange(start..<cursor)
        cursor = start
    }

    /// Up: the previous history entry.
    public mutating func previous() {
        guard !history.isEmpty else { return }
        if browsing == nil {
            draft = text
            browsing = history.count
        }
        guard let index = browsing, index > 0 else { return }
        browsing = index - 1
        show(Array(history[index - 1]))
    }

    /// Down: the next history entry, then what was being typed.
    public mutating func next() {
        guard let index = browsing else { return }
        if index + 1 < history.count {
            browsing = index + 1
            show(Array(history[index + 1]))
        } else {
            browsing = nil
            show(draft)
        }
    }

    /// Enter: returns the line (nil when blank), remembers it, and empties the editor.
    public mutating func submit() -> String? {
        let entered = line
        text = []
        cursor = 0
        browsing = nil
        draft = []
        guard !entered.allSatisfy(\.isWhitespace) else { return nil }
        if history.last != entered { history.append(entered) }
        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
        return entered
    }

    private mutating func show(_ characters: [Character]) {
        text = characters
        cursor = characters.count
    }
}
