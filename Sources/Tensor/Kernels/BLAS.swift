import CBLAS

/// Row-major single-precision GEMM: C[M,N] = alpha · op(A) · op(B) + beta · C.
///
/// `op(A)` is A[M,K] (lda ≥ K) or, with `transA`, Aᵀ where A is [K,M] (lda ≥ M); likewise B.
/// Thin wrapper over `cblas_sgemm`; the leading dimensions allow strided views (attention heads
/// read columns h·D..<(h+1)·D of a [L, H·D] matrix with ld = H·D).
@inline(__always)
public func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                  alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                  b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    if FlopCounter.enabled { FlopCounter.add(2 * m * n * k, shape: FlopCounter.byShape ? "\(transA ? "T" : "N")\(transB ? "T" : "N") \(m)x\(n)x\(k)" : nil) }
    if k == 0 {
        if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
        return
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// y ← alpha·x + beta·y over `n` elements (`cblas_saxpby`; used for the momentum EMA).
@inline(__always)
public func saxpby(_ n: Int, alpha: Float, x: UnsafePointer<Float>, beta: Float, y: UnsafeMutablePointer<Float>) {
    cblas_saxpby(Int32(n), alpha, x, 1, beta, y, 1)
}

/// x ← alpha·x over `n` elements (`cblas_sscal`).
@inline(__always)
public func sscal(_ n: Int, alpha: Float, x: UnsafeMutablePointer<Float>) {
    cblas_sscal(Int32(n), alpha, x, 1)
}

/// y ← y + alpha·x (`cblas_saxpy`).
@inline(__always)
public func saxpy(_ n: Int, alpha: Float, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
    cblas_saxpy(Int32(n), alpha, x, 1, y, 1)
}

/// Counts matrix-multiply floating-point operations (2·m·n·k per GEMM) when enabled (benchmarks).
public enum FlopCounter {
    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) static var total = 0
    nonisolated(unsafe) static var lock = pthread_mutex_t()
    nonisolated(unsafe) static var initialized = false

    /// Also aggregate by GEMM shape (for profiling).
    nonisolated(unsafe) public static var byShape = false
    nonisolated(unsafe) public static var shapes: [String: (calls: Int, flops: Int)] = [:]

    static func add(_ n: Int, shape: String? = nil) {
        pthread_mutex_lock(&lock)
        total += n
        if let shape { let o = shapes[shape] ?? (0, 0); shapes[shape] = (o.calls + 1, o.flops + n) }
        pthread_mutex_unlock(&lock)
    }

    /// Returns the count since the last call and resets it.
    public static func take() -> Int {
        pthread_mutex_lock(&lock)
        defer { total = 0; pthread_mutex_unlock(&lock) }
        return total
    }
}

#if canImport(Glibc)
import Glibc
#endif
