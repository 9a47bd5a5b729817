import CBLAS
import CKernels
import Dispatch

/// The per-rank thread-count knob, obeyed by OpenBLAS and by our own kernels.
///
/// Our kernels split *rows* into `count` fixed contiguous chunks, each computed by one thread with
/// the same arithmetic as the single-threaded loop, so results never depend on timing or on the
/// thread count (reductions across rows use per-chunk partials combined in chunk order only where
/// the chunking is a function of the row count alone).
public enum Threading {
    nonisolated(unsafe) public private(set) static var count: Int = 1

    /// Sets the number of threads for BLAS and our kernels (≥ 1).
    public static func setThreads(_ n: Int) {
        _ = blasIdleSpin
        count = max(1, n)
        openblas_set_num_threads(Int32(count))
    }

    /// OpenBLAS's idle server threads spin 2^20 cycles (≈ 0.4 ms here) before sleeping instead of
    /// its default 2^28 (≈ 0.1 s): with the default the spare BLAS thread of a 2-thread rank never
    /// sleeps between GEMMs and its `sched_yield` loop took 20 % of a tiny bf16 step's CPU samples
    /// from our kernels' and oneDNN's threads (`perf`). Measured side by side (2026-12-07, 2
    /// threads, alternating processes, medians): tiny bf16 0.425 → 0.389 s, tiny fp32 0.424 →
    /// 0.379 s, base bf16 5.15 / 4.56 → 4.83 / 4.51 s, base fp32 7.34 → 7.03 s; 2^4 (sleep at
    /// once) slowed tiny fp32 (a wake-up per GEMM). Scheduling only: results are unchanged. The
    /// environment's `OPENBLAS_THREAD_TIMEOUT`, when set, wins. Returns what
    /// `ck_openblas_set_thread_timeout` returned.
    static let blasIdleSpin: Int32 = ck_openblas_set_thread_timeout(20)

    /// Like `parallelFor`, for bodies that call BLAS: while our threads run, BLAS is told to use
    /// one thread (nested BLAS threading would oversubscribe the cores and spin).
    public static func parallelForBLAS(_ n: Int, _ body: (Range<Int>) -> Void) {
        let t = min(count, n)
        if t <= 1 { if n > 0 { body(0..<n) }; return }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(count)) }
        parallelFor(n, grain: 1, body)
    }

    /// Runs `body` over `0..<n` split into at most `count` contiguous ranges of at least
    /// `grain` items, in parallel; ranges are disjoint, so writes to per-row outputs never race.
    @inline(__always)
    public static func parallelFor(_ n: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        let t = min(count, max(1, n / max(grain, 1)))
        if t <= 1 || n <= 1 {
            if n > 0 { body(0..<n) }
            return
        }
        let chunk = (n + t - 1) / t
        withoutActuallyEscaping(body) { b in
            DispatchQueue.concurrentPerform(iterations: t) { i in
                let lo = i * chunk, hi = min(n, lo + chunk)
                if lo < hi { b(lo..<hi) }
            }
        }
    }
}
