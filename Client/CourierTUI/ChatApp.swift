import CNCurses
import CourierClient
import CourierProtocol
import Foundation
import NIOConcurrencyHelpers

/// The terminal chat screen on ncurses: chats with unread counts on the left, the selected
/// chat's messages (with each own message's state) on the right, a status bar with the
/// connection and the outbox, and an input line with editing and history.
///
/// Curses is not thread-safe, so every curses call happens on one thread of its own; server
/// calls run as tasks and hand their results back through `inbox`.
public final class ChatApp: @unchecked Sendable {
    // @unchecked: the screen state below is touched only on the UI thread; `inbox` is locked.
    enum Posted: Sendable {
        case chats([ChatInfo])
        case members(ChatMembers)
        case older(chatID: UInt64, page: HistoryResponse?)
        case notice(String)
        case overlay(title: String, lines: [String])
        case select(UInt64)
    }

    public static let help = [
        "Commands:",
        "  /new NAME [USER...]   create a chat (you and the users named)",
        "  /join NAME            join a chat by name",
        "  /invite USER          add a user to this chat",
        "  /members              who is in this chat, and who is online (●)",
        "  /edit TEXT            replace the text of your newest message here",
        "  /delete               delete your newest message here",
        "  /rename NAME          give this chat a display name (everyone sees it)",
        "  /leave                leave this chat",
        "  /search WORDS         search your chats (whole words)",
        "  /help                 this text",
        "  /quit                 leave (also Ctrl-C, or Ctrl-D on an empty line)",
        "Keys:",
        "  Tab, Ctrl-N / Shift-Tab, Ctrl-P   next / previous chat; after @, Tab completes a member's name",
        "  PgUp / PgDn, mouse wheel          scroll the messages",
        "  Up / Down                         input history",
        "  Left / Right, Home / End, Ctrl-A / Ctrl-E   move in the line",
        "  Backspace, Delete, Ctrl-W, Ctrl-U, Ctrl-K   delete a character, word, to start, to end",
        "  Esc                               close this panel or search results",
        "  Ctrl-L                            redraw",
        "Marks on your messages: … waiting to send · ✓ accepted by the server · ✓✓ delivered to everyone · ✗ refused",
        "The bell rings for a message in a chat you are not looking at, or one that mentions you (@name): see --bell.",
    ]

    /// When the terminal bell rings.
    public enum Bell: String, Sendable, CaseIterable {
        /// A message in a chat not on screen, or one that mentions the user.
        case all
        /// Only a message that mentions the user.
        case mentions
        case off
    }

    let engine: ClientEngine
    let bell: Bell
    let calls: ServerCalls
    let inbox = NIOLockedValueBox<[Posted]>([])

    var chats: [LocalStore.ChatEntry] = []
    var selectedChat: UInt64?
    /// Lines scrolled up from the newest.
    var scroll = 0
    var editor = LineEditor()
    var notice: String?
    var overlay: (title: String, lines: [String])?
    var running = true
    var colors = false
    var lastChatRefresh = ContinuousClock.now - .seconds(3600)
    /// When each chat's members were last asked for (names of senders seen only by id).
    var membersAsked: [UInt64: ContinuousClock.Instant] = [:]
    /// User names, by id: the store's at start, then each member list that comes.
    var names: [UInt64: String] = [:]
    /// Older messages paged from the server for each chat (PgUp past the local cache), oldest
    /// first; at most `maxOlderLines` a chat, the oldest dropped beyond.
    var older: [UInt64: [LocalStore.Line]] = [:]
    static let maxOlderLines = 50_000
    /// Chats whose first message is on screen already (the server has nothing older).
    var olderExhausted: Set<UInt64> = []
    /// When a chat's last older page was asked for: one at a time, a failed one retried after 5 s.
    var olderAsked: [UInt64: ContinuousClock.Instant] = [:]
    /// Each chat's members as last listed (for completing names).
    var members: [UInt64: [ChatMember]] = [:]
    /// Users with a live session, from member lists and presence pushes.
    var online: Set<UInt64> = []
    /// Chats with a message that mentions the user, not looked at since.
    var mentioned: Set<UInt64> = []
    /// Tab completing a name: where it starts in the line, the names that fit, the one shown.
    var completing: (start: Int, candidates: [String], index: Int)?

    public init(engine: ClientEngine, bell: Bell = .all) {
        self.engine = engine
        self.bell = bell
        calls = ServerCalls(endpoint: engine.endpoint, server: engine.server, token: engine.settings.token)
    }

    /// Runs the screen until the user quits; the terminal is restored however it ends.
    public func run() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                self.loop()
                done.resume()
            }
            thread.name = "courier-ui"
            thread.start()
        }
    }

    // MARK: The UI thread

    func loop() {
        courier_set_locale()
        initscr()
        defer { endwin() }
        raw()
        noecho()
        keypad(courier_stdscr(), true)
        wtimeout(courier_stdscr(), 100)
        mousemask(courier_wheel_up() | courier_wheel_down(), nil)
        if has_colors() {
            colors = true
            start_color()
            use_default_colors()
            init_pair(1, Int16(COLOR_CYAN), -1)    // chat names, titles
            init_pair(2, Int16(COLOR_GREEN), -1)   // accepted, delivered
            init_pair(3, Int16(COLOR_YELLOW), -1)  // waiting
            init_pair(4, Int16(COLOR_RED), -1)     // refused
            init_pair(5, Int16(COLOR_BLACK), Int16(COLOR_CYAN))  // status bar
        }
        names = (try? engine.store.userNames()) ?? [:]
        while running {
            let age = ContinuousClock.now - lastChatRefresh
            // A chat known only by id (someone added us to it) is named within a few seconds.
            if age > .seconds(30) || (age > .seconds(3) && (try? engine.store.hasUnnamedChats()) == true) { refreshChats() }
            drainInbox()
            draw()
            var key: wint_t = 0
            let kind = wget_wch(courier_stdscr(), &key)
            if kind == ERR { continue }
            if kind == courier_key_code_yes() {
                handleKey(Int32(key))
            } else {
                handleCharacter(UInt32(key))
            }
        }
    }

    func handleKey(_ key: Int32) {
        completing = nil
        switch key {
        case KEY_RESIZE: clear()
        case KEY_PPAGE: scroll += max(1, messageRows - 1)
        case KEY_NPAGE: scroll = max(0, scroll - max(1, messageRows - 1))
        case KEY_UP: editor.previous()
        case KEY_DOWN: editor.next()
        case KEY_LEFT: editor.left()
        case KEY_RIGHT: editor.right()
        case KEY_HOME: editor.home()
        case KEY_END: editor.end()
        case KEY_BACKSPACE: editor.backspace()
        case KEY_DC: editor.deleteForward()
        case KEY_BTAB: selectChat(offset: -1)
        case KEY_ENTER: submit()
        case KEY_MOUSE:
            var event = MEVENT()
            if getmouse(&event) == OK {
                if event.bstate & courier_wheel_up() != 0 { scroll += 3 }
                if event.bstate & courier_wheel_down() != 0 { scroll = max(0, scroll - 3) }
            }
        default: break
        }
    }

    func handleCharacter(_ code: UInt32) {
        if code != 9 { completing = nil }
        switch code {
        case 3: running = false                                   // Ctrl-C
        case 4: if editor.text.isEmpty { running = false } else { editor.deleteForward() }  // Ctrl-D
        case 1: editor.home()                                     // Ctrl-A
        case 5: editor.end()                                      // Ctrl-E
        case 11: editor.killToEnd()                               // Ctrl-K
        case 21: editor.killToStart()                             // Ctrl-U
        case 23: editor.deleteWordBackward()                      // Ctrl-W
        case 12: clear()                                          // Ctrl-L
        case 9: if !completeName() { selectChat(offset: 1) }      // Tab
        case 14: selectChat(offset: 1)                            // Ctrl-N
        case 16: selectChat(offset: -1)                           // Ctrl-P
        case 10, 13: submit()
        case 8, 127: editor.backspace()
        case 27:
            overlay = nil
            notice = nil
        default:
            guard code >= 32, let scalar = Unicode.Scalar(code) else { return }
            editor.insert(Character(scalar))
        }
    }

    /// Tab after "@": the first member name that fits, then the next at each Tab. False when
    /// the cursor is not in a name after "@" (Tab then moves to the next chat).
    func completeName() -> Bool {
        if var state = completing, !state.candidates.isEmpty {
            state.index = (state.index + 1) % state.candidates.count
            editor.replaceBeforeCursor(from: state.start, with: state.candidates[state.index] + " ")
            completing = state
            return true
        }
        guard let typed = Mentions.nameBeingTyped(in: editor.text, cursor: editor.cursor) else { return false }
        let me = engine.settings.userID
        let known = selectedChat.flatMap { members[$0] }?.filter { $0.userID != me }.map(\.name)
            ?? names.filter { $0.key != me }.map(\.value)
        if selectedChat.map({ members[$0] == nil }) ?? false { askForNames(selectedChat!) }
        let candidates = Mentions.completions(of: typed.prefix, among: known)
        guard let first = candidates.first else {
            notice = "no member's name starts with \(typed.prefix)"
            return true
        }
        editor.replaceBeforeCursor(from: typed.start, with: first + " ")
        completing = (typed.start, candidates, 0)
        return true
    }

    func selectChat(offset: Int) {
        guard !chats.isEmpty else { return }
        let index = chats.firstIndex { $0.id == selectedChat } ?? 0
        selectedChat = chats[(index + offset + chats.count) % chats.count].id
        scroll = 0
        overlay = nil
    }

    func submit() {
        guard let line = editor.submit() else { return }
        if line.hasPrefix("/") {
            command(line)
            return
        }
        guard let chat = selectedChat else {
            notice = "no chat selected: /join NAME or /new NAME first"
            return
        }
        do {
            try engine.send(chatID: chat, text: line)
            scroll = 0
        } catch {
            notice = "not sent: \(error)"
        }
    }

    func command(_ line: String) {
        let words = line.split(separator: " ").map(String.init)
        let arguments = Array(words.dropFirst())
        switch words.first {
        case "/quit", "/exit": running = false
        case "/help": overlay = ("Help", Self.help)
        case "/new":
            guard let name = arguments.first else { return notice = "usage: /new NAME [USER...]" }
            call("creating \(name)") { calls in
                let chat = try await calls.createChat(name: name, members: Array(arguments.dropFirst()))
                return [.chats(try await calls.chats()), .select(chat.chatID), .notice("created \(chat.name)")]
            }
        case "/join":
            guard let name = arguments.first else { return notice = "usage: /join NAME" }
            call("joining \(name)") { calls in
                let chat = try await calls.join(name: name)
                return [.chats(try await calls.chats()), .select(chat.chatID), .notice("joined \(chat.name)")]
            }
        case "/invite":
            guard let user = arguments.first, let chat = selectedChat else { return notice = "usage: /invite USER (in a chat)" }
            call("inviting \(user)") { calls in
                let info = try await calls.invite(chatID: chat, user: user)
                return [.chats(try await calls.chats()), .notice("\(user) is in \(info.name) now")]
            }
        case "/members":
            guard let chat = selectedChat else { return notice = "usage: /members (in a chat)" }
            let me = engine.settings.userID
            let title = chats.first { $0.id == chat }.map { "Members of \($0.name) (Esc closes)" } ?? "Members (Esc closes)"
            call("asking for the members") { calls in
                let members = try await calls.members(chatID: chat)
                let lines = members.members.map { "\($0.online ? "●" : "○") \($0.name)\($0.userID == me ? " (you)" : "")" } + (members.more ? ["and more"] : [])
                return [.members(members), .overlay(title: title, lines: lines)]
            }
        case "/edit", "/delete":
            guard let chat = selectedChat else { return notice = "usage: \(words[0]) (in a chat)" }
            let text = words[0] == "/edit" ? String(line.dropFirst("/edit".count)).trimmingCharacters(in: .whitespaces) : ""
            if words[0] == "/edit", text.isEmpty { return notice = "usage: /edit NEW TEXT (replaces your newest message here)" }
            guard let target = try? engine.store.newestOwnMessage(chatID: chat), let sequence = target.sequence else {
                return notice = "nothing of yours here to change yet (a message can be changed once the server has it)"
            }
            do {
                try engine.send(chatID: chat, text: text, change: words[0] == "/edit" ? .edit(sequence: sequence) : .delete(sequence: sequence))
                notice = words[0] == "/edit" ? "editing your message" : "deleting your message"
            } catch {
                notice = "not sent: \(error)"
            }
        case "/rename":
            guard let chat = selectedChat else { return notice = "usage: /rename NAME (in a chat)" }
            let title = String(line.dropFirst("/rename".count)).trimmingCharacters(in: .whitespaces)
            if let problem = MessageChange.rename.problem(withText: title) { return notice = "not renamed: \(problem)" }
            do {
                try engine.send(chatID: chat, text: title, change: .rename)
            } catch {
                notice = "not sent: \(error)"
            }
        case "/leave":
            guard let chat = selectedChat else { return notice = "usage: /leave (in a chat)" }
            let store = engine.store
            call("leaving") { calls in
                try await calls.leave(chatID: chat)
                try store.forgetChat(chat)
                return [.chats(try await calls.chats()), .notice("you left the chat")]
            }
        case "/search":
            guard !arguments.isEmpty else { return notice = "usage: /search WORDS" }
            let words = arguments.joined(separator: " ")
            call("searching") { calls in
                let hits = try await calls.search(words: words)
                let lines = hits.isEmpty ? ["nothing found"] : hits.map { "\($0.chatName) · \($0.senderName): \($0.snippet)" }
                return [.overlay(title: "Search: \(words) (Esc closes)", lines: lines)]
            }
        default:
            notice = "unknown command \(words.first ?? ""); /help lists them"
        }
    }

    /// Runs a server call as a task; its results (or its failure) come back through the inbox.
    func call(_ what: String, _ body: @escaping @Sendable (ServerCalls) async throws -> [Posted]) {
        notice = what + "…"
        let calls = self.calls
        let inbox = self.inbox
        Task {
            let posted: [Posted]
            do {
                posted = try await body(calls)
            } catch {
                posted = [.notice("\(what) failed: \(error)")]
            }
            inbox.withLockedValue { $0 += posted }
        }
    }

    func refreshChats() {
        lastChatRefresh = ContinuousClock.now
        let calls = self.calls
        let inbox = self.inbox
        Task {
            // Offline, the chats known from earlier sessions stay on screen.
            if let found = try? await calls.chats() { inbox.withLockedValue { $0.append(.chats(found)) } }
        }
    }

    /// Asks for the members of a chat on screen with a sender known only by id (at most once
    /// per chat per 30 s): a push carries only the sender's id.
    func askForNames(_ chatID: UInt64) {
        let now = ContinuousClock.now
        guard membersAsked[chatID].map({ now - $0 > .seconds(30) }) ?? true else { return }
        membersAsked[chatID] = now
        let calls = self.calls
        let inbox = self.inbox
        Task {
            if let members = try? await calls.members(chatID: chatID) { inbox.withLockedValue { $0.append(.members(members)) } }
        }
    }

    func askForOlder(_ chatID: UInt64, before sequence: UInt64) {
        let now = ContinuousClock.now
        guard !olderExhausted.contains(chatID), olderAsked[chatID].map({ now - $0 > .seconds(5) }) ?? true else { return }
        olderAsked[chatID] = now
        let calls = self.calls
        let inbox = self.inbox
        Task {
            let page = try? await calls.history(chatID: chatID, beforeSequence: sequence, limit: 500)
            inbox.withLockedValue { $0.append(.older(chatID: chatID, page: page)) }
        }
    }

    func drainInbox() {
        let posted = inbox.withLockedValue { posted in
            defer { posted = [] }
            return posted
        }
        for item in posted {
            switch item {
            case .chats(let found): try? engine.store.rememberChats(found.map { ($0.chatID, $0.name, $0.title) })
            case .members(let found):
                try? engine.store.rememberMembers(found)
                members[found.chatID] = found.members
                for member in found.members {
                    names[member.userID] = member.name
                    if member.online { online.insert(member.userID) } else { online.remove(member.userID) }
                }
            case .older(let chatID, let page):
                guard let page else {
                    notice = "older messages: no answer from the server; PgUp tries again"
                    continue
                }
                olderAsked[chatID] = nil
                if !page.more { olderExhausted.insert(chatID) }
                let me = engine.settings.userID
                // Edits and deletes are not lines: the messages they changed come as they are now.
                let lines = page.messages.filter { $0.change == nil || $0.change == .rename }.map {
                    LocalStore.Line(chatID: chatID, sequence: $0.chatSequence, senderUserID: $0.senderUserID, clientMessageID: $0.clientMessageID,
                                    text: $0.text, sentAtMs: $0.clientSentAtMs, own: $0.senderUserID == me ? .accepted : nil,
                                    edited: $0.editedAtMs != 0, deleted: $0.deleted, renamed: $0.change == .rename)
                }
                let known = older[chatID] ?? []
                older[chatID] = Array((lines.filter { line in known.first.map { line.sequence! < $0.sequence! } ?? true } + known).suffix(Self.maxOlderLines))
                try? engine.store.keepOlder(page.messages)
            case .notice(let text): notice = text
            case .overlay(let title, let lines): overlay = (title, lines)
            case .select(let chat):
                selectedChat = chat
                scroll = 0
                overlay = nil
            }
        }
        chats = (try? engine.store.chats()) ?? chats
        if selectedChat == nil || !chats.contains(where: { $0.id == selectedChat }) { selectedChat = chats.first?.id }
        for (user, isOnline) in engine.store.takePresence() {
            if isOnline { online.insert(user) } else { online.remove(user) }
        }
        ringForArrivals()
    }

    /// Rings the bell (as `bell` says) for messages that arrived in a chat not on screen or
    /// that mention the user, and marks the chats that mention the user.
    func ringForArrivals() {
        let arrivals = engine.store.takeArrivals()
        guard !arrivals.isEmpty else { return }
        let me = engine.settings.userID
        // The user's own name comes with a member list; ask for one until it is known.
        if names[me] == nil, let chat = selectedChat { askForNames(chat) }
        var ring = false
        for arrival in arrivals {
            let mentionsMe = names[me].map { Mentions.text(arrival.text, mentions: $0) } ?? false
            if mentionsMe, arrival.chatID != selectedChat || scroll > 0 { mentioned.insert(arrival.chatID) }
            switch bell {
            case .all: ring = ring || mentionsMe || arrival.chatID != selectedChat
            case .mentions: ring = ring || mentionsMe
            case .off: break
            }
        }
        if ring { beep() }
    }
}
