import CNCurses
import CourierClient
import Foundation

/// The screen's drawing: the chat list, the messages (names, presence, changes, day
/// separators), the status bar and the input line. Runs on the UI thread only.
extension ChatApp {

    var rows: Int { Int(courier_lines()) }
    var columns: Int { Int(courier_cols()) }
    var listWidth: Int { min(24, max(12, columns / 4)) }
    var messageRows: Int { max(0, rows - 3) }

    func draw() {
        erase()
        guard rows >= 6, columns >= 30 else {
            put(0, 0, TextWidth.prefix("window too small", columns: columns))
            refresh()
            return
        }
        drawChatList()
        drawMessages()
        drawStatus()
        drawInput()
        refresh()
    }

    func drawChatList() {
        let width = listWidth
        styled(colors ? courier_color_pair(1) | courier_bold() : courier_bold()) { put(0, 0, TextWidth.prefix("Chats", columns: width - 1)) }
        for (index, chat) in chats.prefix(rows - 3).enumerated() {
            let mention = mentioned.contains(chat.id) ? " @" : ""
            let unread = (chat.unread > 0 && chat.id != selectedChat ? " (\(chat.unread))" : "") + mention
            let label = TextWidth.prefix(chat.name, columns: width - 2 - TextWidth.of(unread)) + unread
            if chat.id == selectedChat {
                styled(courier_reverse()) { put(index + 1, 0, label + String(repeating: " ", count: max(0, width - 1 - TextWidth.of(label)))) }
            } else {
                styled(chat.unread > 0 || !mention.isEmpty ? courier_bold() : 0) { put(index + 1, 0, label) }
            }
        }
        for row in 0..<(rows - 2) { put(row, width - 1, "│") }
    }

    func drawMessages() {
        let left = listWidth + 1
        let width = columns - left
        if let overlay {
            styled(courier_bold()) { put(0, left, TextWidth.prefix(overlay.title, columns: width)) }
            let lines = overlay.lines.flatMap { TextWidth.wrap($0, columns: width) }
            for (index, line) in lines.prefix(messageRows).enumerated() { put(index + 1, left, line) }
            return
        }
        guard let chatID = selectedChat, let chat = chats.first(where: { $0.id == chatID }) else {
            put(0, left, TextWidth.prefix("No chats yet: /new NAME creates one, /join NAME joins one, /help for more.", columns: width))
            return
        }
        let me = engine.settings.userID
        let here = (members[chatID] ?? []).filter { $0.userID != me && online.contains($0.userID) }.map(\.name)
        let header = "# \(chat.name)" + (here.isEmpty ? "" : " · online: " + here.joined(separator: ", "))
        styled(colors ? courier_color_pair(1) | courier_bold() : courier_bold()) { put(0, left, TextWidth.prefix(header, columns: width)) }
        if members[chatID] == nil { askForNames(chatID) }
        var rendered: [(text: String, attributes: attr_t)] = []
        var day: DateComponents?
        let local = (try? engine.store.lines(chatID: chatID, limit: LocalStore.historyPerChat)) ?? []
        let firstLocal = local.first?.sequence
        let earlier = (older[chatID] ?? []).filter { line in firstLocal.map { line.sequence! < $0 } ?? true }
        for line in earlier + local {
            let lineDay = Self.day(line.sentAtMs)
            if lineDay != day {
                day = lineDay
                rendered.append((Self.daySeparator(line.sentAtMs, columns: width), courier_dim()))
            }
            let time = Self.clock(line.sentAtMs)
            let name = line.senderUserID == me ? "you" : names[line.senderUserID]
            if name == nil { askForNames(chatID) }
            // Online people carry a dot before their name ("● alice: ...").
            let who = (line.senderUserID != me && online.contains(line.senderUserID) ? "● " : "") + (name ?? "user \(line.senderUserID)")
            let (mark, attributes) = self.mark(line.own)
            let text: String
            var lineAttributes = attributes
            if line.renamed {
                text = "\(time) \(who) renamed the chat to “\(line.text)”"
                lineAttributes = courier_dim()
            } else if line.deleted {
                text = "\(time) \(who): (deleted)"
                lineAttributes = courier_dim()
            } else {
                text = "\(time) \(who): \(line.text)\(line.edited ? " (edited)" : "")\(mark.isEmpty ? "" : " " + mark)"
            }
            rendered += TextWidth.wrap(text, columns: width).map { ($0, lineAttributes) }
        }
        let visible = messageRows - 1
        scroll = min(scroll, max(0, rendered.count - visible))
        // Scrolled to the top: the page before comes from the server's history.
        if scroll >= rendered.count - visible, let first = (earlier.first ?? local.first)?.sequence, first > 1 { askForOlder(chatID, before: first) }
        let end = rendered.count - scroll
        let start = max(0, end - visible)
        for (row, line) in rendered[start..<end].enumerated() {
            styled(line.attributes) { put(row + 1, left, line.text) }
        }
        if chat.unread > 0 && scroll == 0 { try? engine.store.markRead(chatID: chatID) }
        if scroll == 0 { mentioned.remove(chatID) }
    }

    func mark(_ state: LocalStore.OwnState?) -> (String, attr_t) {
        switch state {
        case .waiting?: return ("…", colors ? courier_color_pair(3) : courier_dim())
        case .accepted?: return ("✓", colors ? courier_color_pair(2) : 0)
        case .delivered?: return ("✓✓", colors ? courier_color_pair(2) | courier_bold() : courier_bold())
        case .failed?: return ("✗ refused", colors ? courier_color_pair(4) : courier_bold())
        case nil: return ("", 0)
        }
    }

    func drawStatus() {
        let status = engine.status
        // The state and the outbox first, so a narrow window still shows them; details after.
        let waiting = (try? engine.store.waitingCount()) ?? 0
        var text = " \(status.connectionText(server: engine.serverName)) · outbox: \(waiting) waiting"
        if let notice { text += " · \(notice)" }
        if let problem = status.sendProblem, waiting > 0 { text += " · \(problem)" }
        text += scroll > 0 ? " · scrolled up \(scroll)" : ""
        text = TextWidth.prefix(text, columns: columns)
        styled(colors ? courier_color_pair(5) : courier_reverse()) {
            put(rows - 2, 0, text + String(repeating: " ", count: max(0, columns - TextWidth.of(text))))
        }
    }

    func drawInput() {
        let prompt = "> "
        let width = columns - prompt.count - 1
        let characters = editor.text
        // Scroll the line horizontally so the cursor stays visible.
        var start = 0
        while TextWidth.of(String(characters[start..<editor.cursor])) > width { start += 1 }
        let visible = TextWidth.prefix(String(characters[start...]), columns: width)
        put(rows - 1, 0, prompt + visible)
        move(Int32(rows - 1), Int32(prompt.count + TextWidth.of(String(characters[start..<editor.cursor]))))
    }

    func put(_ row: Int, _ column: Int, _ text: String) {
        _ = mvaddstr(Int32(row), Int32(column), text)
    }

    func styled(_ attributes: attr_t, _ body: () -> Void) {
        attr_on(attributes, nil)
        body()
        attr_off(attributes, nil)
    }

    /// The calendar day of a time, in the local time zone.
    static func day(_ milliseconds: Int64) -> DateComponents {
        Calendar.current.dateComponents([.year, .month, .day], from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }

    /// "──── Saturday 5 December 2026 ────", centred in `columns`.
    static func daySeparator(_ milliseconds: Int64, columns: Int) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "EEEE d MMMM yyyy"
        let label = " \(formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))) "
        let side = max(2, (columns - TextWidth.of(label)) / 2)
        return TextWidth.prefix(String(repeating: "─", count: side) + label + String(repeating: "─", count: side), columns: columns)
    }

    static func clock(_ milliseconds: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
        let components = Calendar.current.dateComponents([.hour, .minute], from: date)
        return String(format: "%02d:%02d", components.hour ?? 0, components.minute ?? 0)
    }
}
