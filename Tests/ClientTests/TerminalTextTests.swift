import CourierTUI
import Foundation
import XCTest

final class LineEditorTests: XCTestCase {
    func type(_ text: String, into editor: inout LineEditor) {
        for character in text { editor.insert(character) }
    }

    func testEditingKeysWorkLikeAShell() {
        var editor = LineEditor()
        type("hello world", into: &editor)
        editor.deleteWordBackward()
        XCTAssertEqual(editor.line, "hello ")
        editor.home()
        editor.insert(">")
        XCTAssertEqual(editor.line, ">hello ")
        editor.right()
        editor.deleteForward()
        XCTAssertEqual(editor.line, ">hllo ")
        editor.killToEnd()
        XCTAssertEqual(editor.line, ">h")
        editor.end()
        type("é🙂", into: &editor)
        editor.backspace()
        XCTAssertEqual(editor.line, ">hé", "a character is a grapheme, not a byte")
        editor.killToStart()
        XCTAssertEqual(editor.line, "")
        XCTAssertNil(editor.submit(), "a blank line is not entered")
    }

    func testHistoryBrowsesEnteredLinesAndReturnsToTheDraft() {
        var editor = LineEditor()
        type("first", into: &editor)
        XCTAssertEqual(editor.submit(), "first")
        type("second", into: &editor)
        XCTAssertEqual(editor.submit(), "second")
        type("draft", into: &editor)
        editor.previous()
        XCTAssertEqual(editor.line, "second")
        editor.previous()
        editor.previous()
        XCTAssertEqual(editor.line, "first", "stops at the oldest")
        editor.next()
        editor.next()
        XCTAssertEqual(editor.line, "draft", "back to what was being typed")
        for index in 0..<(LineEditor.historyLimit + 10) {
            type("line \(index)", into: &editor)
            _ = editor.submit()
        }
        XCTAssertEqual(editor.history.count, LineEditor.historyLimit, "bounded")
    }
}

final class TextWidthTests: XCTestCase {
    override func setUp() {
        setlocale(LC_ALL, "C.UTF-8")
    }

    func testWideCharactersTakeTwoColumnsAndLinesNeverOverflow() {
        XCTAssertEqual(TextWidth.of("abc"), 3)
        XCTAssertEqual(TextWidth.of("日本"), 4)
        XCTAssertEqual(TextWidth.of("🙂"), 2)
        XCTAssertEqual(TextWidth.of("e\u{301}"), 1, "a combining accent takes no column")
        let text = "naïve 日本語 text with 🙂 emoji and a verylongwordthatmustbecutacrosslines"
        for columns in [5, 8, 13, 20] {
            let lines = TextWidth.wrap(text, columns: columns)
            XCTAssertTrue(lines.allSatisfy { TextWidth.of($0) <= columns }, "\(columns): \(lines)")
            XCTAssertEqual(lines.joined().filter { $0 != " " }, text.filter { $0 != " " }, "nothing is lost")
        }
        XCTAssertEqual(TextWidth.wrap("  indented line", columns: 40), ["  indented line"])
        XCTAssertEqual(TextWidth.prefix("日本語", columns: 5), "日本")
    }
}

final class MentionTests: XCTestCase {
    func testAMentionIsTheWholeNameAfterAnAt() {
        XCTAssertTrue(Mentions.text("@alice see you", mentions: "alice"))
        XCTAssertTrue(Mentions.text("see you, @Alice.", mentions: "alice"), "case and a full stop after the name")
        XCTAssertFalse(Mentions.text("@alicia", mentions: "alice"), "a longer name is someone else")
        XCTAssertFalse(Mentions.text("@al", mentions: "alice"))
        XCTAssertFalse(Mentions.text("alice", mentions: "alice"), "no @, no mention")
        XCTAssertTrue(Mentions.text("hi @bob-2 and @alice", mentions: "alice"))
    }

    func testTabCompletesTheNameBeingTyped() {
        XCTAssertEqual(Mentions.completions(of: "al", among: ["bob", "alice", "alan", "Alba"]), ["Alba", "alan", "alice"])
        XCTAssertEqual(Mentions.completions(of: "", among: ["bob"]), ["bob"])
        let line = Array("hi @al")
        XCTAssertEqual(Mentions.nameBeingTyped(in: line, cursor: line.count)?.prefix, "al")
        XCTAssertEqual(Mentions.nameBeingTyped(in: line, cursor: line.count)?.start, 4)
        XCTAssertNil(Mentions.nameBeingTyped(in: Array("mail a@b"), cursor: 8), "an @ inside a word is not a mention")
        XCTAssertNil(Mentions.nameBeingTyped(in: Array("hello"), cursor: 5))

        var editor = LineEditor()
        for character in "hi @al" { editor.insert(character) }
        editor.replaceBeforeCursor(from: 4, with: "alice ")
        XCTAssertEqual(editor.line, "hi @alice ")
        XCTAssertEqual(editor.cursor, 10)
    }
}
