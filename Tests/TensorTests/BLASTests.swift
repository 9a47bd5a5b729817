import Glibc
import XCTest
@testable import Tensor

final class BLASTests: XCTestCase {
    /// `cblas_sgemm` through the shim equals a naive triple loop on odd shapes, every transpose combination.
    func testSgemmMatchesNaiveLoop() {
        var rng = RandomGenerator(seed: 3)
        for (m, n, k) in [(3, 5, 7), (1, 9, 4), (13, 11, 17)] {
            for ta in [false, true] { for tb in [false, true] {
                let a = (0..<(m * k)).map { _ in rng.normal() }, b = (0..<(k * n)).map { _ in rng.normal() }
                var c = (0..<(m * n)).map { _ in rng.normal() }
                let c0 = c
                a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                    sgemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: pa.baseAddress!, lda: ta ? m : k,
                          b: pb.baseAddress!, ldb: tb ? k : n, beta: 2, c: pc.baseAddress!, ldc: n)
                } } }
                for i in 0..<m { for j in 0..<n {
                    var s: Double = 0
                    for p in 0..<k {
                        let av = ta ? a[p * m + i] : a[i * k + p]
                        let bv = tb ? b[j * k + p] : b[p * n + j]
                        s += Double(av) * Double(bv)
                    }
                    let want = 0.5 * s + 2 * Double(c0[i * n + j])
                    XCTAssertEqual(Double(c[i * n + j]), want, accuracy: 1e-4, "m\(m) n\(n) k\(k) ta\(ta) tb\(tb) at (\(i),\(j))")
                } }
            } }
        }
    }

    func testThreadKnobSetsBLAS() {
        Threading.setThreads(2)
        XCTAssertEqual(Threading.count, 2)
        Threading.setThreads(1)
        XCTAssertEqual(Threading.count, 1)
    }

    /// OpenBLAS's spare server thread sleeps soon after a GEMM (`Threading.blasIdleSpin`: 2^20
    /// cycles of spinning instead of OpenBLAS's default 2^28, ≈ 0.1 s), and threaded GEMMs still
    /// work after the restart of its threads: the process uses almost no CPU while idle right
    /// after a 2-thread sgemm (with the default it spins ≈ 0.1 s of CPU in `sched_yield`).
    func testBLASIdleThreadsSleepSoonAfterAGEMM() throws {
        Threading.setThreads(2)
        defer { Threading.setThreads(1) }
        if Threading.blasIdleSpin == 0 { throw XCTSkip("OPENBLAS_THREAD_TIMEOUT is set in the environment: OpenBLAS's own setting") }
        XCTAssertEqual(Threading.blasIdleSpin, 1, "this OpenBLAS lacks openblas_read_env / blas_thread_shutdown_")
        let n = 384
        var rng = RandomGenerator(seed: 5)
        let a = (0..<(n * n)).map { _ in rng.normal() }, b = (0..<(n * n)).map { _ in rng.normal() }
        var c = [Float](repeating: 0, count: n * n)
        func cpuSeconds() -> Double {
            var ts = timespec()
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        }
        var idleCPU: [Double] = []
        for _ in 0..<3 {
            a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                sgemm(m: n, n: n, k: n, a: pa.baseAddress!, lda: n, b: pb.baseAddress!, ldb: n, c: pc.baseAddress!, ldc: n)
            } } }
            let t0 = cpuSeconds()
            usleep(250_000)
            idleCPU.append(cpuSeconds() - t0)
        }
        // One entry of the product, against float64.
        var want = 0.0
        for p in 0..<n { want += Double(a[7 * n + p]) * Double(b[p * n + 11]) }
        XCTAssertEqual(Double(c[7 * n + 11]), want, accuracy: 1e-3)
        XCTAssertLessThan(idleCPU.min()!, 0.03, "CPU seconds used in 0.25 s idle after a threaded sgemm: \(idleCPU)")
    }
}
