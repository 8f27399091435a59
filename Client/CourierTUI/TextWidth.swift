import CNCurses
import Foundation

/// Display widths on a terminal: an emoji or a CJK character takes two columns, a combining
/// mark none. Used to wrap and cut text so the screen never overflows.
public enum TextWidth {
    public static func of(_ character: Character) -> Int {
        var width = 0
        for scalar in character.unicodeScalars {
            // -1: unknown to the locale's tables (or not printable); count one column.
            let columns = Int(courier_wcwidth(scalar.value))
            width += columns < 0 ? 1 : columns
        }
        // An emoji presentation sequence shows two columns even where wcwidth says one.
        if character.unicodeScalars.count > 1 && character.unicodeScalars.contains(where: { $0.properties.isEmojiPresentation }) { return 2 }
        return min(max(width, character.isASCII ? 1 : width), 2)
    }

    public static func of(_ text: String) -> Int {
        text.reduce(0) { $0 + of($1) }
    }

    /// `text` cut to at most `columns` columns.
    public static func prefix(_ text: String, columns: Int) -> String {
        var used = 0
        var result = ""
        for character in text {
            let width = of(character)
            if used + width > columns { break }
            used += width
            result.append(character)
        }
        return result
    }

    /// `text` wrapped into lines of at most `columns` columns, at spaces where possible.
    public static func wrap(_ text: String, columns: Int) -> [String] {
        guard columns > 0 else { return [] }
        var lines: [String] = []
        for paragraph in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = ""
            var used = 0
            // Whether `line` has a word yet; runs of spaces (an indentation) are kept.
            var started = false
            for word in paragraph.split(separator: " ", omittingEmptySubsequences: false) {
                let wordWidth = of(String(word))
                let gap = started ? 1 : 0
                if used + gap + wordWidth <= columns {
                    if gap == 1 { line.append(" ") }
                    line += word
                    used += gap + wordWidth
                    started = true
                    continue
                }
                if started {
                    lines.append(line)
                    line = ""
                    used = 0
                }
                // A word longer than a line is cut across lines.
                var rest = String(word)
                while of(rest) > columns {
                    let head = prefix(rest, columns: columns)
                    lines.append(head)
                    rest.removeFirst(head.count)
                }
                line = rest
                used = of(rest)
                started = true
            }
            lines.append(line)
        }
        return lines
    }
}
