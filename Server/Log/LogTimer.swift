/// A timer for the log's sweep of expired waits (`EmbeddedLog`), in place of `Task.sleep`,
/// which wakes dispatch's timer thread and a dispatch worker before the task runs again: three
/// thread wake-ups a round, twenty rounds a second, loaded or idle. A thread that keeps its own
/// timer (the embedded store's writer, where the waiting consumers run) wakes once.
public protocol LogTimer: Sendable {
    /// Where the sweep runs; the waits it ends go on from there.
    var executor: any TaskExecutor { get }
    func sleep(for duration: Duration) async
}
