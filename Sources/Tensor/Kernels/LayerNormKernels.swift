#if canImport(Glibc)
import Glibc
#endif

/// Layer normalisation over the last dimension, forward.
///
/// Concretely, per row x (length C): μ = mean(x), σ² = mean((x−μ)²) (biased, two-pass),
/// r = 1/√(σ² + eps), y = (x − μ)·r·w + b. Saves μ and r per row for the backward.
/// Sums use 8 partial accumulators combined in a fixed order (deterministic).
/// PyTorch counterpart: `torch.nn.LayerNorm(C, eps)`; keys `weight`, `bias`.
public func layerNormForward(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                             rstd: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                             weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                             rows: Int, cols: Int, eps: Float) {
    // out (N, C), mean (N), rstd (N), inp (N, C), weight (C), bias (C)
    let c8 = cols & ~7
    Threading.parallelFor(rows, grain: 16) { range in
        for r in range {
            let x = inp + r * cols
            let y = out + r * cols
            let m = vsum(x, cols) / Float(cols)
            let mv = Float8(repeating: m)
            var acc = Float8(repeating: 0)
            var c = 0
            while c < c8 { let d = load8(x + c) - mv; acc += d * d; c += 8 }
            var v = acc.sum()
            while c < cols { let d = x[c] - m; v += d * d; c += 1 }
            let rs = 1 / (v / Float(cols) + eps).squareRoot()
            let rv = Float8(repeating: rs)
            c = 0
            while c < c8 { store8((load8(x + c) - mv) * rv * load8(weight + c) + load8(bias + c), y + c); c += 8 }
            while c < cols { y[c] = (x[c] - m) * rs * weight[c] + bias[c]; c += 1 }
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
    let c8 = cols & ~7
    if let dinp {
        Threading.parallelFor(rows, grain: 16) { range in
            for r in range {
                let x = inp + r * cols, dy = dout + r * cols, dx = dinp + r * cols
                let m = mean[r], rs = rstd[r]
                let mv = Float8(repeating: m), rv = Float8(repeating: rs)
                var ag = Float8(repeating: 0), agx = Float8(repeating: 0)
                var c = 0
                while c < c8 {
                    let g = load8(dy + c) * load8(weight + c)
                    ag += g
                    agx += g * ((load8(x + c) - mv) * rv)
                    c += 8
                }
                var sg = ag.sum(), sgx = agx.sum()
                while c < cols { let g = dy[c] * weight[c]; sg += g; sgx += g * (x[c] - m) * rs; c += 1 }
                sg /= Float(cols)
                sgx /= Float(cols)
                let sgv = Float8(repeating: sg), sgxv = Float8(repeating: sgx)
                c = 0
                while c < c8 {
                    let xh = (load8(x + c) - mv) * rv
                    store8(load8(dx + c) + rv * (load8(dy + c) * load8(weight + c) - sgv - xh * sgxv), dx + c)
                    c += 8
                }
                while c < cols {
                    let xh = (x[c] - m) * rs
                    dx[c] += rs * (dy[c] * weight[c] - sg - xh * sgx)
                    c += 1
                }
            }
        }
    }
    if dweight != nil || dbias != nil {
        // Columns split across threads; each column sums its rows in order (deterministic).
        Threading.parallelFor(cols / 8 + 1, grain: 8) { range in
            let lo = range.lowerBound * 8, hi = min(cols, range.upperBound * 8)
            guard lo < hi else { return }
            for r in 0..<rows {
                let x = inp + r * cols, dy = dout + r * cols
                let m = mean[r], rs = rstd[r]
                var c = lo
                if let dweight, let dbias {
                    while c + 8 <= hi {
                        let g = load8(dy + c)
                        store8(load8(dweight + c) + g * ((load8(x + c) - m) * rs), dweight + c)
                        store8(load8(dbias + c) + g, dbias + c)
                        c += 8
                    }
                }
                while c < hi {
                    dweight?[c] += dy[c] * (x[c] - m) * rs
                    dbias?[c] += dy[c]
                    c += 1
                }
            }
        }
    }
}
