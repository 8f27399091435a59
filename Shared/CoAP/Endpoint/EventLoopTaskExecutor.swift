import NIOCore

/// A task executor that runs its jobs on one NIO event loop. The tasks that serve a socket's
/// requests prefer the socket's loop (`CoAPEndpoint.serve`), a push session's tasks the loop
/// of its connection, and a sender's exchanges the loop of its socket: what the channel reads
/// resumes the waiting task on the thread that read it, and what the task writes reaches the
/// channel on the same thread.
///
/// Why a task executor and not NIO's loops as Swift's global executor alone: NIO runs a global
/// job as isolated to the loop (a serial executor), so every call into a nonisolated async
/// function (which hops to the generic executor) went back through the loop's queue, about a
/// dozen times per request. A job run here is on the generic executor with this preference,
/// and such a hop continues in place.
///
/// Bounded as the loop's own task queue is: one job per task ready to run here. The loop must
/// outlive the tasks that prefer it (a job for a loop that has shut down is dropped, and its
/// task never resumes); Courier's loops are NIO's singleton group, which never shuts down.
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
