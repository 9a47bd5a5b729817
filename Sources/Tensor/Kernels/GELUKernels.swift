#if canImport(Glibc)
import Glibc
#endif

/// GELU, exact erf form: y = ½·x·(1 + erf(x/√2)). PyTorch: `nn.GELU()` (approximate='none').
public func geluForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
    let s: Float = 0.70710678118654752440
    Threading.parallelFor(count, grain: 4096) { range in
        for i in range {
            let x = inp[i]
            out[i] = 0.5 * x * (1 + erff(x * s))
        }
    }
}

/// GELU backward: dx += dy · (½(1 + erf(x/√2)) + x·φ(x)), φ the standard normal density.
public func geluBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                         inp: UnsafePointer<Float>, count: Int) {
    let s: Float = 0.70710678118654752440
    let k: Float = 0.39894228040143267794  // 1/√(2π)
    Threading.parallelFor(count, grain: 4096) { range in
        for i in range {
            let x = inp[i]
            let cdf = 0.5 * (1 + erff(x * s))
            let pdf = k * expf(-0.5 * x * x)
            dinp[i] += dout[i] * (cdf + x * pdf)
        }
    }
}
