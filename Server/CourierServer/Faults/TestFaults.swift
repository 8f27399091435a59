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

    public init(dropEvery: Int? = nil, duplicateEvery: Int? = nil) {
        self.dropEvery = dropEvery
        self.duplicateEvery = duplicateEvery
    }

    public var isActive: Bool { dropEvery != nil || duplicateEvery != nil }

    /// What the faults do, for the warning at start.
    public var summary: String {
        [dropEvery.map { "drops one message in \($0)" }, duplicateEvery.map { "stores one message in \($0) twice" }]
            .compactMap { $0 }.joined(separator: ", ")
    }

    public func validate() throws(ConfigurationError) {
        if let dropEvery, dropEvery < 1 { throw ConfigurationError("--test-drop-every must be at least 1") }
        if let duplicateEvery, duplicateEvery < 1 { throw ConfigurationError("--test-duplicate-every must be at least 1") }
    }
}
