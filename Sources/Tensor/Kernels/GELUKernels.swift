#if canImport(Glibc)
import Glibc
#endif

/// GELU, erf form: y = ½·x·(1 + erf(x/√2)). PyTorch: `nn.GELU()` (approximate='none').
/// Vectorised (see `verf`); the scalar tail uses libm's erff.
public func geluForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
    let s: Float = 0.70710678118654752440
    Threading.parallelFor(count / 8 + 1, grain: 1024) { range in
        let lo = range.lowerBound * 8, hi = min(count, range.upperBound * 8)
        var i = lo
        while i + 8 <= hi {
            let x = load8(inp + i)
            store8(0.5 * x * (1 + verf(x * s)), out + i)
            i += 8
        }
        while i < hi { let x = inp[i]; out[i] = 0.5 * x * (1 + erff(x * s)); i += 1 }
    }
}

/// GELU backward: dx += dy · (½(1 + erf(x/√2)) + x·φ(x)), φ the standard normal density.
public func geluBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                         inp: UnsafePointer<Float>, count: Int) {
    let s: Float = 0.70710678118654752440
    let k: Float = 0.39894228040143267794  // 1/√(2π)
    Threading.parallelFor(count / 8 + 1, grain: 1024) { range in
        let lo = range.lowerBound * 8, hi = min(count, range.upperBound * 8)
        var i = lo
        while i + 8 <= hi {
            let x = load8(inp + i)
            let cdf = 0.5 * (1 + verf(x * s))
            let pdf = k * vexp(-0.5 * x * x)
            store8(load8(dinp + i) + load8(dout + i) * (cdf + x * pdf), dinp + i)
            i += 8
        }
        while i < hi {
            let x = inp[i]
            dinp[i] += dout[i] * (0.5 * (1 + erff(x * s)) + x * k * expf(-0.5 * x * x))
            i += 1
        }
    }
}
