#if canImport(Glibc)
import Glibc
#endif

/// Every endpoint and session is a file descriptor: a server with 20,000 push sessions, or a
/// simulator with 20,000 devices (a UDP and a TCP socket each), needs more than the usual
/// default soft limit.
public enum FileDescriptorLimit {
    /// Raises the soft limit to the hard one; as root, first tries to raise both to `wanted`.
    /// Returns the soft limit in force afterwards.
    @discardableResult
    public static func raise(to wanted: UInt64 = 1_048_576) -> UInt64 {
        #if canImport(Glibc)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_max < wanted {
            var higher = rlimit(rlim_cur: rlim_t(wanted), rlim_max: rlim_t(wanted))
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &higher) == 0 { return UInt64(wanted) }
        }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return UInt64(limit.rlim_cur)
        #else
        return 0
        #endif
    }
}
