import XCTest
@testable import Tensor

/// Finite-difference gradient check: compares autograd gradients of
/// L = Σ f(inputs) ⊙ r (r a fixed random tensor, to catch layout bugs) with central differences.
func gradCheck(_ name: String, inputs: [Tensor], eps: Float = 1e-3, rtol: Float = 2e-2, atol: Float = 2e-3,
               file: StaticString = #filePath, line: UInt = #line, _ f: ([Tensor]) -> Tensor) {
    var rng = RandomGenerator(seed: 99)
    for t in inputs { t.requiresGrad = true; t.gradStorage = nil }
    let y0 = f(inputs)
    let r = (0..<y0.count).map { _ in rng.uniform(Float(-1), Float(1)) }
    func lossValue() -> Double {
        withNoGrad {
            let y = f(inputs)
            var s = 0.0
            for i in 0..<y.count { s += Double(y.data[i]) * Double(r[i]) }
            return s
        }
    }
    let weighted = (y0 * Tensor(r, shape: y0.shape)).sum()
    weighted.backward()
    for (k, t) in inputs.enumerated() {
        guard let g = t.grad?.scalars else { XCTFail("\(name): input \(k) got no gradient", file: file, line: line); continue }
        var worst: (Float, Int, Float, Float) = (0, -1, 0, 0)
        for i in 0..<t.count {
            let old = t.data[i]
            t.data[i] = old + eps
            let lp = lossValue()
            t.data[i] = old - eps
            let lm = lossValue()
            t.data[i] = old
            let num = Float((lp - lm) / Double(2 * eps))
            let err = abs(num - g[i])
            let tol = atol + rtol * max(abs(num), abs(g[i]))
            if err > tol, err - tol > worst.0 { worst = (err - tol, i, num, g[i]) }
        }
        XCTAssertLessThan(worst.1, 0, "\(name): input \(k) shape \(t.shape) element \(worst.1): numeric \(worst.2) vs autograd \(worst.3)",
                          file: file, line: line)
    }
}

func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = RandomGenerator(seed: seed)
    return Tensor((0..<shape.reduce(1, *)).map { _ in rng.normal() * scale }, shape: shape)
}

func assertClose(_ a: [Float], _ b: [Float], atol: Float = 1e-5, rtol: Float = 1e-4, _ msg: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(msg): sizes", file: file, line: line)
    for i in 0..<min(a.count, b.count) where abs(a[i] - b[i]) > atol + rtol * abs(b[i]) {
        XCTFail("\(msg): element \(i): \(a[i]) vs \(b[i])", file: file, line: line)
        return
    }
}
