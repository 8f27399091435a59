#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's limit on open files (RLIMIT_NOFILE). Every push session is a socket, so a
/// large fleet needs far more than the usual soft limit of 1024.
public enum FileDescriptorLimit {
    /// What root asks for, and Linux's default ceiling (`fs.nr_open`).
    public static let rootTarget: rlim_t = 1_048_576

    /// Raises the soft limit to the hard limit; as root, first tries to raise both to
    /// `rootTarget` (and quietly settles for the hard limit when that is refused). Never lowers
    /// a limit. Returns the limits in force afterwards, nil when they cannot be read.
    @discardableResult
    public static func raise() -> (soft: UInt64, hard: UInt64)? {
        guard var limit = current() else { return nil }
        if geteuid() == 0, limit.rlim_max != unlimited, limit.rlim_max < rootTarget {
            var wanted = rlimit(rlim_cur: rootTarget, rlim_max: rootTarget)
            if setrlimit(resource, &wanted) == 0 { limit = wanted }
        }
        if limit.rlim_cur != limit.rlim_max {
            // An infinite hard limit cannot be the soft limit for files on Linux: ask for the target.
            var wanted = rlimit(rlim_cur: limit.rlim_max == unlimited ? max(limit.rlim_cur, rootTarget) : limit.rlim_max, rlim_max: limit.rlim_max)
            _ = setrlimit(resource, &wanted)
        }
        return current().map { (UInt64($0.rlim_cur), UInt64($0.rlim_max)) }
    }

    private static func current() -> rlimit? {
        var limit = rlimit()
        return getrlimit(resource, &limit) == 0 ? limit : nil
    }

    #if os(Linux)
    // RLIM_INFINITY (~0) does not import into Swift.
    private static let unlimited = rlim_t.max
    private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let unlimited = RLIM_INFINITY
    private static let resource = RLIMIT_NOFILE
    #endif
}
