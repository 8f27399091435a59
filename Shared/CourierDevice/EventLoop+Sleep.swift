import NIOCore

extension EventLoop {
    /// Sleeps on this loop's own timer; throws `CancellationError` once the task is cancelled.
    /// A task that runs on this loop (`EventLoopTaskExecutor`) wakes where it slept: `Task.sleep`
    /// would arm a timer on Dispatch's timer thread, which wakes a second thread to hand the task
    /// back, per sleep.
    public func sleep(for duration: Duration) async throws {
        let timer = scheduleTask(in: TimeAmount(duration)) {}
        try await withTaskCancellationHandler {
            do { try await timer.futureResult.get() } catch { throw CancellationError() }
        } onCancel: {
            timer.cancel()
        }
    }
}
