#if canImport(Glibc)
import Glibc
#endif

/// Seconds from a monotonic clock (`CLOCK_MONOTONIC`): for durations, never wall time.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
