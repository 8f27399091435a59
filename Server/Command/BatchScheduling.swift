import Foundation

/// Puts the server's threads under Linux's SCHED_BATCH policy (`ServerConfiguration.batchScheduling`).
enum BatchScheduling {
    /// SCHED_BATCH; sched.h declares the name only under _GNU_SOURCE.
    private static let policy: Int32 = 3

    /// Moves every thread of this process to SCHED_BATCH; a thread started later inherits the
    /// policy of the thread that starts it. Returns the threads that could not be moved, each
    /// with the reason (none on Linux, where any process may take this policy).
    static func apply() -> [String] {
        let tasks: [String]
        do {
            tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")
        } catch {
            return ["/proc/self/task: \(error)"]
        }
        var failures: [String] = []
        for task in tasks {
            guard let thread = pid_t(task) else { continue }
            var parameters = sched_param()
            parameters.sched_priority = 0
            if sched_setscheduler(thread, policy, &parameters) != 0 {
                // ESRCH: the thread ended meanwhile, which is no failure.
                if errno != ESRCH { failures.append("thread \(thread): \(String(cString: strerror(errno)))") }
            }
        }
        return failures
    }
}
