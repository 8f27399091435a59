import NIOCore

extension EventLoop {
    /// Sleeps on this loop's own timer; throws `CancellationError` once the task is cancelled.
    /// A task that runs on this loop (`EventLoopTaskExecutor`) wakes where it slept: `Task.sleep`
    /// would arm a timer on Dispatch's timer thread, which wakes a second thread to hand the task
    /// back, per sleep.
    public func sleep(for duration: Duration) async throws {
        let timer = scheduleTask(in: TimeAmount(clamping: duration)) {}
        try await withTaskCancellationHandler {
            do { try await timer.futureResult.get() } catch { throw CancellationError() }
        } onCancel: {
            timer.cancel()
        }
    }
}

extension TimeAmount {
    /// `duration` in NIO's nanoseconds: a negative one is zero, and one beyond about 292 years
    /// (Int64 nanoseconds) is a year, which no device waits out.
    init(clamping duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        self = nanoseconds.overflow ? .hours(24 * 365) : .nanoseconds(max(0, nanoseconds.partialValue &+ attoseconds / 1_000_000_000))
    }
}
