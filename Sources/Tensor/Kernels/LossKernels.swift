#if canImport(Glibc)
import Glibc
#endif

/// Cross-entropy with integer labels, mean over rows whose label ≠ `ignoreIndex`.
///
/// loss = (1/M) Σ_{n: y_n ≠ ignore} (logsumexp(x_n) − x_n[y_n]), M = number of such rows.
/// Returns (loss, M); M = 0 gives loss 0 (guarded, where PyTorch would give NaN).
/// PyTorch counterpart: `F.cross_entropy(x, y, ignore_index=-100)`.
public func crossEntropyForward(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, rows: Int, cols: Int,
                                ignoreIndex: Int32 = -100) -> (loss: Float, valid: Int) {
    var total: Double = 0
    var m = 0
    for r in 0..<rows {
        let y = labels[r]
        if y == ignoreIndex { continue }
        precondition(y >= 0 && Int(y) < cols, "crossEntropy: label \(y) out of range 0..<\(cols) at row \(r)")
        let x = logits + r * cols
        total += Double(logSumExp(x, cols) - x[Int(y)])
        m += 1
    }
    return (m == 0 ? 0 : Float(total / Double(m)), m)
}

/// Cross-entropy backward: dx_n += g/M · (softmax(x_n) − onehot(y_n)) for non-ignored rows.
public func crossEntropyBackward(dlogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                                 labels: UnsafePointer<Int32>, rows: Int, cols: Int, valid: Int,
                                 gradOut: Float, ignoreIndex: Int32 = -100) {
    guard valid > 0 else { return }
    let s = gradOut / Float(valid)
    Threading.parallelFor(rows, grain: 8) { range in
        for r in range {
            let y = labels[r]
            if y == ignoreIndex { continue }
            let x = logits + r * cols, d = dlogits + r * cols
            let lse = logSumExp(x, cols)
            for c in 0..<cols { d[c] += s * expf(x[c] - lse) }
            d[Int(y)] -= s
        }
    }
}

/// Cross-entropy against soft targets, mean over rows:
/// loss = (1/N) Σ_n −Σ_c q_nc · log_softmax(x_n)_c.
/// PyTorch counterpart: `-(F.log_softmax(x, 1) * q).sum(1).mean()` (ALBEF's ITC and MLM distillation).
public func softCrossEntropyForward(logits: UnsafePointer<Float>, targets: UnsafePointer<Float>,
                                    rows: Int, cols: Int) -> Float {
    var total: Double = 0
    for r in 0..<rows {
        let x = logits + r * cols, q = targets + r * cols
        let lse = logSumExp(x, cols)
        var s: Float = 0
        for c in 0..<cols { s += q[c] * (x[c] - lse) }
        total -= Double(s)
    }
    return rows == 0 ? 0 : Float(total / Double(rows))
}

/// Soft cross-entropy backward: dx_n += g/N · ((Σ_c q_nc)·softmax(x_n) − q_n).
public func softCrossEntropyBackward(dlogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                                     targets: UnsafePointer<Float>, rows: Int, cols: Int, gradOut: Float) {
    guard rows > 0 else { return }
    let s = gradOut / Float(rows)
    Threading.parallelFor(rows, grain: 8) { range in
        for r in range {
            let x = logits + r * cols, q = targets + r * cols, d = dlogits + r * cols
            let lse = logSumExp(x, cols)
            var qs: Float = 0
            for c in 0..<cols { qs += q[c] }
            for c in 0..<cols { d[c] += s * (qs * expf(x[c] - lse) - q[c]) }
        }
    }
}
