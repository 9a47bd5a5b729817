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
}
