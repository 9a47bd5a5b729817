/// Multi-head scaled dot-product attention with an additive key mask, forward.
///
/// Concretely, for batch b and head h (head h reads columns h·D..<(h+1)·D of each row):
///   S = scale · Q_bh K_bhᵀ + mask_b (broadcast over query rows),  P = softmax_rows(S),
///   O_bh = P V_bh.
/// Q rows live at `q + (b·Lq + i)·ldq`, K/V rows at `k + (b·Lk + j)·ldk` (so a packed
/// `[B, L, 3C]` qkv buffer is read in place with ld = 3C). `out` is `[B, Lq, H·D]`.
/// `probs` (`[B, H, Lq, Lk]`) is saved for the backward. `mask` is `[B, Lk]` additive
/// (0 or −10000 as BERT builds it) or nil.
/// PyTorch counterpart: timm `Attention.forward` / xbert `BertSelfAttention.forward` (no dropout).
public func attentionForward(out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>?,
                             q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                             v: UnsafePointer<Float>, ldv: Int, mask: UnsafePointer<Float>?,
                             batch: Int, heads: Int, lq: Int, lk: Int, headDim: Int, scale: Float,
                             dropout: (p: Float, seed: UInt64)? = nil) {
    let hd = heads * headDim
    Threading.parallelForBLAS(batch * heads) { range in
        let dropped = dropout.map { _ in Storage(count: lq * lk, zeroed: false) }
        let scratch = probs == nil ? Storage(count: lq * lk, zeroed: false) : nil
        for bh in range {
            let b = bh / heads, h = bh % heads
            let p = probs.map { $0 + bh * lq * lk } ?? scratch!.pointer
            attentionProbabilities(p, q: q + b * lq * ldq + h * headDim, ldq: ldq, k: k + b * lk * ldk + h * headDim, ldk: ldk,
                                   mask: mask.map { $0 + b * lk }, lq: lq, lk: lk, headDim: headDim, scale: scale)
            let vb = v + b * lk * ldv + h * headDim
            var pv = UnsafePointer(p)
            if let dropout, let d = dropped?.pointer {
                fillDropoutMask(d, count: lq * lk, p: dropout.p, seed: dropout.seed, stream: bh)
                for i in 0..<(lq * lk) { d[i] *= p[i] }
                pv = UnsafePointer(d)
            }
            sgemm(m: lq, n: headDim, k: lk, a: pv, lda: lk, b: vb, ldb: ldv, c: out + b * lq * hd + h * headDim,
                  ldc: hd)
        }
        withExtendedLifetime(dropped) {}
        withExtendedLifetime(scratch) {}
    }
}

/// P = softmax_rows(scale · Q Kᵀ + mask) for one (batch, head) block into `p` (`[Lq, Lk]`).
/// The forward and a backward that recomputes P (instead of keeping it) call this same code, so
/// the recomputed P is bit-identical to the forward's.
@inline(__always)
func attentionProbabilities(_ p: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, ldq: Int,
                            k: UnsafePointer<Float>, ldk: Int, mask: UnsafePointer<Float>?,
                            lq: Int, lk: Int, headDim: Int, scale: Float) {
    sgemm(transB: true, m: lq, n: lk, k: headDim, alpha: scale, a: q, lda: ldq, b: k, ldb: ldk, c: p, ldc: lk)
    if let mask {
        for i in 0..<lq {
            let row = p + i * lk
            for j in 0..<lk { row[j] += mask[j] }
        }
    }
    for i in 0..<lq { softmaxRow(p + i * lk, p + i * lk, lk) }
}

/// Inverted-dropout multipliers for one (batch, head) block: 0 with probability p, else 1/(1−p),
/// drawn from `RandomGenerator(seed).split(stream)` so forward and backward regenerate the same
/// mask whatever the thread split.
@inline(__always)
func fillDropoutMask(_ m: UnsafeMutablePointer<Float>, count: Int, p: Float, seed: UInt64, stream: Int) {
    var r = RandomGenerator(seed: seed).split(UInt64(stream))
    let keep = 1 / (1 - p)
    for i in 0..<count { m[i] = r.nextFloat() < p ? 0 : keep }
}

/// Attention backward, accumulating into dq, dk, dv (same strides as the forward inputs).
/// `probs` is the forward's P, or nil to recompute it per (batch, head) block from q, k and
/// `mask` (one more Q Kᵀ product instead of keeping `[B, H, Lq, Lk]` floats alive).
///
/// dP = dO Vᵀ; dV += Pᵀ dO; dS = P ⊙ (dP − rowsum(dP ⊙ P)); dQ += scale·dS K; dK += scale·dSᵀ Q.
public func attentionBackward(dq: UnsafeMutablePointer<Float>?, dk: UnsafeMutablePointer<Float>?,
                              dv: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                              probs: UnsafePointer<Float>?,
                              q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                              v: UnsafePointer<Float>, ldv: Int, mask: UnsafePointer<Float>? = nil,
                              batch: Int, heads: Int, lq: Int, lk: Int, headDim: Int, scale: Float,
                              dropout: (p: Float, seed: UInt64)? = nil) {
    let hd = heads * headDim
    Threading.parallelForBLAS(batch * heads) { range in
        let scratch = Storage(count: (probs == nil ? 2 : 1) * lq * lk, zeroed: false)
        let dp = scratch.pointer
        let maskStorage = dropout.map { _ in Storage(count: 2 * lq * lk, zeroed: false) }
        for bh in range {
            let b = bh / heads, h = bh % heads
            let qo = b * lq * ldq + h * headDim
            let ko = b * lk * ldk + h * headDim
            let vo = b * lk * ldv + h * headDim
            let dob = dout + b * lq * hd + h * headDim
            let p: UnsafePointer<Float>
            if let probs {
                p = probs + bh * lq * lk
            } else {  // recompute P exactly as the forward did
                let r = scratch.pointer + lq * lk
                attentionProbabilities(r, q: q + qo, ldq: ldq, k: k + ko, ldk: ldk, mask: mask.map { $0 + b * lk },
                                       lq: lq, lk: lk, headDim: headDim, scale: scale)
                p = UnsafePointer(r)
            }
            sgemm(transB: true, m: lq, n: lk, k: headDim, a: dob, lda: hd, b: v + vo, ldb: ldv, c: dp, ldc: lk)
            // With dropout, O = (P ⊙ M) V: dV uses P ⊙ M and dP = dP' ⊙ M.
            var pUsed = p
            if let dropout, let ms = maskStorage?.pointer {
                let mask = ms, dropped = ms + lq * lk
                fillDropoutMask(mask, count: lq * lk, p: dropout.p, seed: dropout.seed, stream: bh)
                for i in 0..<(lq * lk) { dropped[i] = p[i] * mask[i]; dp[i] *= mask[i] }
                pUsed = UnsafePointer(dropped)
            }
            if let dv {
                sgemm(transA: true, m: lk, n: headDim, k: lq, a: pUsed, lda: lk, b: dob, ldb: hd, beta: 1,
                      c: dv + vo, ldc: ldv)
            }
            for i in 0..<lq {
                let pr = p + i * lk, dr = dp + i * lk
                var s: Float = 0
                for j in 0..<lk { s += pr[j] * dr[j] }
                for j in 0..<lk { dr[j] = pr[j] * (dr[j] - s) }
            }
            if let dq {
                sgemm(m: lq, n: headDim, k: lk, alpha: scale, a: dp, lda: lk, b: k + ko, ldb: ldk, beta: 1,
                      c: dq + qo, ldc: ldq)
            }
            if let dk {
                sgemm(transA: true, m: lk, n: headDim, k: lq, alpha: scale, a: dp, lda: lk, b: q + qo, ldb: ldq,
                      beta: 1, c: dk + ko, ldc: ldk)
            }
        }
        withExtendedLifetime(scratch) {}
        withExtendedLifetime(maskStorage) {}
    }
}
