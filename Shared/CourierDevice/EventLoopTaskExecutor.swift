import NIOCore

/// A task executor that runs its jobs on one NIO event loop. A push session's tasks prefer
/// the loop that owns the session's connection (`withTaskExecutorPreference`), and a sender's
/// exchanges the loop of its socket: what the connection reads resumes the waiting task on
/// the thread that read it, and what the task writes reaches the channel on the same thread,
/// where the default executor handed every frame from the loop to a pool thread and back.
///
/// Bounded as the loop's own task queue is: one job per task ready to run here, and only the
/// sessions' and exchanges' tasks on this loop prefer it.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
