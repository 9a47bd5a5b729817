import CDNNL

/// A failed oneDNN call: the status code of `CDNNL.h` (a `dnnl_status_t` or a `CDNNL_ERR_*`
/// code) and its message. The one place where `CDNNL` return codes become Swift errors.
public struct DNNLError: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var message: String
    public var function: String
    public var description: String { "oneDNN: \(function): \(message) (status \(code))" }
}

/// Throws `DNNLError` for a non-zero `CDNNL_*` status.
@inline(__always)
func dnnlCheck(_ rc: Int32, _ function: String = #function) throws {
    if rc != 0 { throw DNNLError(code: rc, message: String(cString: CDNNL_status_string(rc)), function: function) }
}

/// oneDNN's bf16 matmul (Debian `libdnnl-dev` 2.6), primitives created once per shape in the C shim.
public enum OneDNN {
    /// Creates the engine once; throws when oneDNN has no bf16 ISA on this CPU.
    public static func initialize() throws { try dnnlCheck(CDNNL_init()) }

    /// oneDNN's version, e.g. "2.6.3".
    public static var version: String {
        let v = Int(CDNNL_version())
        return "\(v / 10000).\(v / 100 % 100).\(v % 100)"
    }

    /// oneDNN's effective CPU ISA (`dnnl_cpu_isa_t`), e.g. 0xe7 = avx512_core_bf16, 0x3e7 = AMX.
    public static var effectiveISA: Int { Int(CDNNL_effective_isa()) }

    /// Matmul primitives created so far.
    public static var primitiveCount: Int { Int(CDNNL_primitive_count()) }
    /// Bytes of this thread's oneDNN scratchpad (the largest any of its GEMMs needed).
    public static var threadScratchpadBytes: Int { Int(CDNNL_thread_scratchpad_bytes()) }

    /// The oneDNN implementation a `bf16gemm` with these arguments runs (e.g. "brg:avx512_core_bf16").
    public static func implementation(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                                      alpha: Float = 1, lda: Int, ldb: Int, beta: Float = 0, ldc: Int,
                                      threads: Int = Threading.count) throws -> String {
        var buf = [CChar](repeating: 0, count: 128)
        try dnnlCheck(CDNNL_gemm_bf16_implementation(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, lda, 0, ldb, 0,
                                                     beta, ldc, 0, 1, Int32(threads), &buf, buf.count))
        return String(cString: buf)
    }
}

/// Row-major GEMM on bf16 operands with fp32 accumulation and an fp32 result:
/// `C[M,N] = alpha · op(A) · op(B) + beta · C`, the bf16 counterpart of `sgemm` (same argument
/// conventions: `op(A)` is A[M,K] with lda ≥ K, or with `transA` Aᵀ where A is [K,M]; likewise B).
/// `a` and `b` hold bf16 bit patterns. `threads` is oneDNN's team size on this thread (1 when called
/// from inside our own parallel loops). PyTorch counterpart: `torch.mm` on bfloat16 under CPU autocast
/// (which also accumulates in fp32, but rounds the result to bf16; ours stays fp32).
public func bf16gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: UnsafePointer<UInt16>, lda: Int,
                     b: UnsafePointer<UInt16>, ldb: Int,
                     beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int = Threading.count) {
    if m == 0 || n == 0 { return }
    if FlopCounter.enabled { FlopCounter.add(2 * m * n * k, shape: FlopCounter.byShape ? "bf16 \(transA ? "T" : "N")\(transB ? "T" : "N") \(m)x\(n)x\(k)" : nil) }
    if k == 0 {
        if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
        return
    }
    let rc = CDNNL_gemm_bf16(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1,
                             Int32(max(1, threads)))
    // The engine was checked when bf16 was enabled (`MatmulPrecision.set`); a failure here is a bug.
    do { try dnnlCheck(rc) } catch { preconditionFailure("bf16gemm \(m)x\(n)x\(k) (transA \(transA), transB \(transB), lda \(lda), ldb \(ldb), ldc \(ldc)): \(error)") }
}
