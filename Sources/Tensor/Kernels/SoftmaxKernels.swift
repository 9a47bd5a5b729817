#if canImport(Glibc)
import Glibc
#endif

/// Row softmax, numerically stable: y = exp(x − max x) / Σ exp(x − max x).
/// PyTorch counterpart: `torch.softmax(x, dim=-1)`.
public func softmaxForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows: Int, cols: Int) {
    Threading.parallelFor(rows, grain: 16) { range in
        for r in range { softmaxRow(out + r * cols, inp + r * cols, cols) }
    }
}

@inline(__always)
func softmaxRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
    var mx = -Float.infinity
    for c in 0..<n where x[c] > mx { mx = x[c] }
    if mx == -Float.infinity { mx = 0 }
    var s: Float = 0
    for c in 0..<n { let e = expf(x[c] - mx); y[c] = e; s += e }
    let inv = 1 / s
    for c in 0..<n { y[c] *= inv }
}

/// Row softmax backward: dx += y ⊙ (dy − Σ dy·y).
public func softmaxBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                            out: UnsafePointer<Float>, rows: Int, cols: Int) {
    Threading.parallelFor(rows, grain: 16) { range in
        for r in range {
            let y = out + r * cols, dy = dout + r * cols, dx = dinp + r * cols
            var d: Float = 0
            for c in 0..<cols { d += dy[c] * y[c] }
            for c in 0..<cols { dx[c] += y[c] * (dy[c] - d) }
        }
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

/// log Σ exp(x) computed stably.
@inline(__always)
public func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var mx = -Float.infinity
    for c in 0..<n where x[c] > mx { mx = x[c] }
    if mx == -Float.infinity { return mx }
    var s: Float = 0
    for c in 0..<n { s += expf(x[c] - mx) }
    return mx + logf(s)
}
