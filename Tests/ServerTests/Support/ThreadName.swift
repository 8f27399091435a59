import Foundation

/// The kernel's name of the calling thread (what /proc and perf show), for tests that check
/// where work runs.
func currentThreadName() -> String {
    ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
}
