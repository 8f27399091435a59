import CourierCore
/// Faults a server commits on purpose, for tests only: they let a test prove that a client's
/// delivery checks catch a server that loses or repeats messages. Set only by hidden
/// `courier-server serve` flags, never by the configuration file or the environment.
public struct TestFaults: Sendable, Equatable {
    /// Every Nth message the consumers process is acknowledged (it is in the log) but never
    /// stored in its chat nor pushed.
    public var dropEvery: Int?
    /// Every Nth message the consumers process is stored twice, at two consecutive sequences,
    /// and so pushed twice.
    public var duplicateEvery: Int?
    /// The process kills itself (SIGKILL) when the consumers are about to commit an offset for
    /// the Nth time: every message below it is stored and pushed, but the offset is not moved,
    /// so the restarted server replays them.
    public var crashBeforeCommit: Int?
    /// Every store into this chat fails (storage unavailable) for this long after the first try.
    public var failChatStore: (chatID: UInt64, duration: Duration)?

    public init(dropEvery: Int? = nil, duplicateEvery: Int? = nil, crashBeforeCommit: Int? = nil, failChatStore: (chatID: UInt64, duration: Duration)? = nil) {
        self.dropEvery = dropEvery
        self.duplicateEvery = duplicateEvery
        self.crashBeforeCommit = crashBeforeCommit
        self.failChatStore = failChatStore
    }

    public static func == (lhs: TestFaults, rhs: TestFaults) -> Bool {
        lhs.dropEvery == rhs.dropEvery && lhs.duplicateEvery == rhs.duplicateEvery && lhs.crashBeforeCommit == rhs.crashBeforeCommit
            && lhs.failChatStore?.chatID == rhs.failChatStore?.chatID && lhs.failChatStore?.duration == rhs.failChatStore?.duration
    }

    public var isActive: Bool { dropEvery != nil || duplicateEvery != nil || crashBeforeCommit != nil || failChatStore != nil }

    /// Parses `CHAT:SECONDS` (for `--test-fail-chat-store`).
    public static func chatStoreFailure(_ text: String) throws(ConfigurationError) -> (chatID: UInt64, duration: Duration) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let chat = UInt64(parts[0]), let seconds = Int(parts[1]), seconds >= 1 else {
            throw ConfigurationError("--test-fail-chat-store wants CHAT:SECONDS (a chat id and at least 1 second), not '\(text)'")
        }
        return (chat, .seconds(seconds))
    }

    /// What the faults do, for the warning at start.
    public var summary: String {
        [
            dropEvery.map { "drops one message in \($0)" }, duplicateEvery.map { "stores one message in \($0) twice" },
            crashBeforeCommit.map { "kills itself before offset commit \($0)" },
            failChatStore.map { "fails every store into chat \($0.chatID) for \($0.duration)" },
        ]
            .compactMap { $0 }.joined(separator: ", ")
    }

    public func validate() throws(ConfigurationError) {
        if let dropEvery, dropEvery < 1 { throw ConfigurationError("--test-drop-every must be at least 1") }
        if let duplicateEvery, duplicateEvery < 1 { throw ConfigurationError("--test-duplicate-every must be at least 1") }
        if let crashBeforeCommit, crashBeforeCommit < 1 { throw ConfigurationError("--test-crash-before-commit must be at least 1") }
    }
}
