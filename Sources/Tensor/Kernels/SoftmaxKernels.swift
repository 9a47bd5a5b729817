#if canImport(Glibc)
import Glibc
#endif
import CKernels

/// Row softmax, numerically stable: y = exp(x − max x) / Σ exp(x − max x) (an all −∞ row uses
/// max 0). C core `ck_softmax_forward` (AVX-512 or AVX2+FMA when available). `out` may alias `inp`.
/// PyTorch counterpart: `torch.softmax(x, dim=-1)`.
public func softmaxForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows: Int, cols: Int) {
    Threading.parallelFor(rows, grain: 16) { range in
        ck_softmax_forward(out, inp, range.lowerBound, range.upperBound, cols)
    }
}

/// Softmax of one row in place or out of place (single-threaded; used inside attention).
@inline(__always)
func softmaxRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
    ck_softmax_forward(y, x, 0, 1, n)
}

/// Row softmax backward: dx += y ⊙ (dy − Σ dy·y) (C core `ck_softmax_backward`).
public func softmaxBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                            out: UnsafePointer<Float>, rows: Int, cols: Int) {
    Threading.parallelFor(rows, grain: 16) { range in
        ck_softmax_backward(dinp, dout, out, range.lowerBound, range.upperBound, cols)
    }
}

/// Row log-softmax: y = x − max − log Σ exp(x − max). PyTorch: `torch.log_softmax(x, -1)`.
public func logSoftmaxForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows: Int, cols: Int) {
    Threading.parallelFor(rows, grain: 16) { range in
        for r in range {
            let x = inp + r * cols, y = out + r * cols
            let lse = logSumExp(x, cols)
            for c in 0..<cols { y[c] = x[c] - lse }
        }
    }
}

/// Log-softmax backward: dx += dy − exp(y)·Σ dy.
public func logSoftmaxBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                               out: UnsafePointer<Float>, rows: Int, cols: Int) {
    Threading.parallelFor(rows, grain: 16) { range in
        for r in range {
            let y = out + r * cols, dy = dout + r * cols, dx = dinp + r * cols
            var s: Float = 0
            for c in 0..<cols { s += dy[c] }
            for c in 0..<cols { dx[c] += dy[c] - expf(y[c]) * s }
        }
    }
}

/// log Σ exp(x) computed stably (vectorised; −∞ for an all −∞ row).
@inline(__always)
public func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var mv = Float8(repeating: -Float.infinity)
    var c = 0
    while c + 8 <= n { mv = vmax(mv, load8(x + c)); c += 8 }
    var mx = mv.max()
    while c < n { if x[c] > mx { mx = x[c] }; c += 1 }
    if mx == -Float.infinity { return mx }
    let m8 = Float8(repeating: mx)
    var acc = Float8(repeating: 0)
    c = 0
    while c + 8 <= n { acc += vexp(load8(x + c) - m8); c += 8 }
    var s = acc.sum()
    while c < n { s += expf(x[c] - mx); c += 1 }
    return mx + logf(s)
}
