#if canImport(Glibc)
import Glibc
#endif

/// Layer normalisation over the last dimension, forward.
///
/// Concretely, per row x (length C): μ = mean(x), σ² = mean((x−μ)²) (biased),
/// r = 1/√(σ² + eps), y = (x − μ)·r·w + b. Saves μ and r per row for the backward.
/// PyTorch counterpart: `torch.nn.LayerNorm(C, eps)`; keys `weight`, `bias`.
public func layerNormForward(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                             rstd: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                             weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                             rows: Int, cols: Int, eps: Float) {
    // out (N, C), mean (N), rstd (N), inp (N, C), weight (C), bias (C)
    Threading.parallelFor(rows, grain: 64) { range in
        for r in range {
            let x = inp + r * cols
            let y = out + r * cols
            var s: Float = 0
            for c in 0..<cols { s += x[c] }
            let m = s / Float(cols)
            var v: Float = 0
            for c in 0..<cols { let d = x[c] - m; v += d * d }
            let rs = 1 / (v / Float(cols) + eps).squareRoot()
            for c in 0..<cols { y[c] = (x[c] - m) * rs * weight[c] + bias[c] }
            mean[r] = m
            rstd[r] = rs
        }
    }
}

/// Layer normalisation backward, accumulating into `dinp`, `dweight`, `dbias`.
///
/// With x̂ = (x − μ)·r and g = dy·w: dx = r·(g − mean(g) − x̂·mean(g·x̂)); dw += Σ dy·x̂; db += Σ dy.
public func layerNormBackward(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                              dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                              inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                              mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows: Int, cols: Int) {
    if let dinp {
        Threading.parallelFor(rows, grain: 64) { range in
            for r in range {
                let x = inp + r * cols, dy = dout + r * cols, dx = dinp + r * cols
                let m = mean[r], rs = rstd[r]
                var sg: Float = 0, sgx: Float = 0
                for c in 0..<cols {
                    let g = dy[c] * weight[c]
                    sg += g
                    sgx += g * (x[c] - m) * rs
                }
                sg /= Float(cols)
                sgx /= Float(cols)
                for c in 0..<cols {
                    let xh = (x[c] - m) * rs
                    dx[c] += rs * (dy[c] * weight[c] - sg - xh * sgx)
                }
            }
        }
    }
    if dweight != nil || dbias != nil {
        for r in 0..<rows {
            let x = inp + r * cols, dy = dout + r * cols
            let m = mean[r], rs = rstd[r]
            if let dweight { for c in 0..<cols { dweight[c] += dy[c] * (x[c] - m) * rs } }
            if let dbias { for c in 0..<cols { dbias[c] += dy[c] } }
        }
    }
}
