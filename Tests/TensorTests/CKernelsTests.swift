import XCTest
import CKernels
@testable import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// The C kernels (GELU, layer norm, softmax) on every code path — AVX-512, AVX2+FMA, portable — against
/// float64 references, and gradient-checked on shapes that exercise full vectors and the tails.
final class CKernelsTests: XCTestCase {
    override func tearDown() { ck_force_portable(0) }

    /// Runs `body` on every code path this machine has (portable always; AVX2 and AVX-512 when
    /// present), with the dispatcher capped at that path.
    func eachPath(_ body: (String) -> Void) {
        ck_force_portable(0)
        let native = ck_simd_level()
        for (level, name) in [(0, "portable"), (2, "avx2"), (3, "avx512")] where level <= native {
            ck_limit_simd_level(Int32(level))
            XCTAssertEqual(ck_simd_level(), Int32(level))
            body(name)
        }
        ck_force_portable(0)
    }

    func values(_ n: Int, seed: UInt64, scale: Float = 3) -> [Float] {
        var r = RandomGenerator(seed: seed)
        return (0..<n).map { _ in r.normal() * scale }
    }

    func testGELUAgainstFloat64() {
        let n = 4099  // vectors plus a scalar tail
        var x = values(n, seed: 1)
        x[0] = -12; x[1] = 12; x[2] = 0; x[3] = -0.0; x[4] = 1e-6
        let dy = values(n, seed: 2, scale: 1)
        eachPath { path in
            var y = [Float](repeating: 0, count: n), dx = [Float](repeating: 0.25, count: n)
            geluForward(out: &y, inp: x, count: n)
            geluBackward(dinp: &dx, dout: dy, inp: x, count: n)
            for i in 0..<n {
                let xd = Double(x[i])
                let cdf = 0.5 * (1 + erf(xd / 2.0.squareRoot()))
                let pdf = exp(-0.5 * xd * xd) / (2 * Double.pi).squareRoot()
                XCTAssertEqual(Double(y[i]), xd * cdf, accuracy: 1e-6 + 1e-6 * abs(xd), "\(path) gelu(\(x[i]))")
                XCTAssertEqual(Double(dx[i]), 0.25 + Double(dy[i]) * (cdf + xd * pdf), accuracy: 2e-6, "\(path) gelu'(\(x[i]))")
            }
        }
    }

    func testLayerNormAndSoftmaxAgainstFloat64() {
        let rows = 70, cols = 131
        let x = values(rows * cols, seed: 3).enumerated().map { $0.element + Float($0.offset % 5) }
        let w = values(cols, seed: 4, scale: 1), b = values(cols, seed: 5, scale: 1)
        eachPath { path in
            var y = [Float](repeating: 0, count: rows * cols), mean = [Float](repeating: 0, count: rows), rstd = mean
            layerNormForward(out: &y, mean: &mean, rstd: &rstd, inp: x, weight: w, bias: b, rows: rows, cols: cols, eps: 1e-5)
            var s = [Float](repeating: 0, count: rows * cols)
            softmaxForward(out: &s, inp: x, rows: rows, cols: cols)
            for r in 0..<rows {
                let row = (0..<cols).map { Double(x[r * cols + $0]) }
                let m = row.reduce(0, +) / Double(cols)
                let v = row.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(cols)
                let rs = 1 / (v + 1e-5).squareRoot()
                XCTAssertEqual(Double(mean[r]), m, accuracy: 1e-5, "\(path) mean row \(r)")
                XCTAssertEqual(Double(rstd[r]), rs, accuracy: 1e-5 * rs, "\(path) rstd row \(r)")
                let mx = row.max()!
                let z = row.map { exp($0 - mx) }.reduce(0, +)
                for c in 0..<cols {
                    XCTAssertEqual(Double(y[r * cols + c]), (row[c] - m) * rs * Double(w[c]) + Double(b[c]), accuracy: 1e-5,
                                   "\(path) layernorm[\(r),\(c)]")
                    XCTAssertEqual(Double(s[r * cols + c]), exp(row[c] - mx) / z, accuracy: 1e-7 + 1e-5 * exp(row[c] - mx) / z,
                                   "\(path) softmax[\(r),\(c)]")
                }
            }
        }
    }

    func testSoftmaxOfMaskedRowIsFinite() {
        let cols = 21
        var x = [Float](repeating: -Float.infinity, count: cols)
        eachPath { path in
            var y = [Float](repeating: 0, count: cols)
            softmaxForward(out: &y, inp: x, rows: 1, cols: cols)
            XCTAssertTrue(y.allSatisfy(\.isFinite), "\(path): an all −∞ row gives finite values, not NaN")
            x[3] = 0
            softmaxForward(out: &y, inp: x, rows: 1, cols: cols)
            XCTAssertEqual(y[3], 1, path)
            XCTAssertEqual(y.reduce(0, +), 1, path)
            x[3] = -Float.infinity
        }
    }

    /// A NaN input stays visible: the clamps inside exp, erf and GELU′ let it through.
    func testNaNPropagates() {
        let n = 37
        var x = values(n, seed: 10)
        x[5] = .nan; x[n - 1] = .nan  // one in a full vector, one in the tail
        let dy = values(n, seed: 11, scale: 1)
        eachPath { path in
            var y = [Float](repeating: 0, count: n), dx = [Float](repeating: 0, count: n)
            geluForward(out: &y, inp: x, count: n)
            geluBackward(dinp: &dx, dout: dy, inp: x, count: n)
            XCTAssertTrue(y[5].isNaN && y[n - 1].isNaN && dx[5].isNaN && dx[n - 1].isNaN, "\(path) gelu of NaN")
            XCTAssertTrue(y[0].isFinite && dx[0].isFinite, path)
            var s = [Float](repeating: 0, count: n)
            softmaxForward(out: &s, inp: x, rows: 1, cols: n)
            XCTAssertTrue(s[5].isNaN, "\(path) softmax of a row with NaN")
        }
    }

    func testGradientsOnVectorWidthsBothPaths() {
        eachPath { path in
            gradCheck("gelu-\(path)", inputs: [randomTensor([3, 13], seed: 140, scale: 2)]) { $0[0].gelu() }
            gradCheck("layernorm-\(path)", inputs: [randomTensor([5, 19], seed: 141), randomTensor([19], seed: 142), randomTensor([19], seed: 143)]) {
                $0[0].layerNorm($0[1], $0[2], eps: 1e-5)
            }
            gradCheck("layernorm-many-rows-\(path)", inputs: [randomTensor([67, 9], seed: 144), randomTensor([9], seed: 145), randomTensor([9], seed: 146)]) {
                $0[0].layerNorm($0[1], $0[2], eps: 1e-5)
            }
            gradCheck("softmax-\(path)", inputs: [randomTensor([4, 17], seed: 147)]) { $0[0].softmax() }
        }
    }

    func testLayerNormBackwardDoesNotDependOnThreads() {
        let rows = 133, cols = 40
        let x = values(rows * cols, seed: 6), dy = values(rows * cols, seed: 7), w = values(cols, seed: 8)
        let b = values(cols, seed: 9)
        func run(_ threads: Int) -> [Float] {
            Threading.setThreads(threads)
            defer { Threading.setThreads(1) }
            var y = [Float](repeating: 0, count: rows * cols), mean = [Float](repeating: 0, count: rows), rstd = mean
            layerNormForward(out: &y, mean: &mean, rstd: &rstd, inp: x, weight: w, bias: b, rows: rows, cols: cols, eps: 1e-6)
            var dx = [Float](repeating: 0, count: rows * cols), dw = [Float](repeating: 0, count: cols), db = dw
            layerNormBackward(dinp: &dx, dweight: &dw, dbias: &db, dout: dy, inp: x, weight: w, mean: mean, rstd: rstd, rows: rows, cols: cols)
            return y + dx + dw + db
        }
        XCTAssertEqual(run(1), run(2))
    }
}
