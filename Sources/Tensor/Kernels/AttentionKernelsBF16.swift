import CKernels

/// Multi-head attention forward in bf16 mixed precision: the math and argument conventions of
/// `attentionForward`, with the two matmuls on bf16 operands (fp32 accumulation, fp32 results):
///   S = scale · bf16(Q_bh) bf16(K_bh)ᵀ + mask   (fp32),   P = softmax_rows(S)   (fp32),
///   O_bh = bf16(P) bf16(V_bh)                   (fp32).
/// Q, K and V are rounded to bf16 once per call into dense `[B·L, H·D]` copies; P per head.
/// PyTorch counterpart: BERT/timm attention under CPU autocast (matmuls bf16, softmax fp32).
public func attentionForwardBF16(out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>?,
                                 q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                                 v: UnsafePointer<Float>, ldv: Int, mask: UnsafePointer<Float>?,
                                 batch: Int, heads: Int, lq: Int, lk: Int, headDim: Int, scale: Float,
                                 dropout: (p: Float, seed: UInt64)? = nil) {
    let hd = heads * headDim
    let qb = BF16Buffer(converting: q, rows: batch * lq, cols: hd, lds: ldq)
    let kb = BF16Buffer(converting: k, rows: batch * lk, cols: hd, lds: ldk)
    let vb = BF16Buffer(converting: v, rows: batch * lk, cols: hd, lds: ldv)
    attentionForwardBF16(out: out, probs: probs, qb: qb.pointer, kb: kb.pointer, vb: vb.pointer, ld: hd, mask: mask, batch: batch,
                         heads: heads, lq: lq, lk: lk, headDim: headDim, scale: scale, dropout: dropout)
    withExtendedLifetime((qb, kb, vb)) {}
}

/// `attentionForwardBF16` on Q, K, V already rounded to bf16, each a `[B·L, H·D]` matrix with
/// rows `ld` apart (the fp32 entry point passes dense copies, ld = H·D; `Tensor.attention` may
/// pass a packed qkv converted in place, ld = 3·H·D).
public func attentionForwardBF16(out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>?,
                                 qb: UnsafePointer<UInt16>, kb: UnsafePointer<UInt16>, vb: UnsafePointer<UInt16>, ld: Int,
                                 mask: UnsafePointer<Float>?, batch: Int, heads: Int, lq: Int, lk: Int, headDim: Int,
                                 scale: Float, dropout: (p: Float, seed: UInt64)? = nil) {
    let hd = heads * headDim
    let inner = attentionInnerThreads(batch * heads)
    Threading.parallelForBLAS(batch * heads) { range in
        let dropped = dropout.map { _ in Storage(count: lq * lk, zeroed: false) }
        let scratch = probs == nil ? Storage(count: lq * lk, zeroed: false) : nil
        let pb = BF16Buffer(count: lq * lk)
        for bh in range {
            let b = bh / heads, h = bh % heads
            let p = probs.map { $0 + bh * lq * lk } ?? scratch!.pointer
            attentionProbabilitiesBF16(p, q: qb + b * lq * ld + h * headDim, k: kb + b * lk * ld + h * headDim,
                                       ld: ld, mask: mask.map { $0 + b * lk }, lq: lq, lk: lk, headDim: headDim,
                                       scale: scale, threads: inner)
            var pv = UnsafePointer(p)
            if let dropout, let d = dropped?.pointer {
                fillDropoutMask(d, count: lq * lk, p: dropout.p, seed: dropout.seed, stream: bh)
                for i in 0..<(lq * lk) { d[i] *= p[i] }
                pv = UnsafePointer(d)
            }
            ck_convert(pb.pointer, pv, lq * lk)
            bf16gemm(m: lq, n: headDim, k: lk, a: pb.pointer, lda: lk, b: vb + b * lk * ld + h * headDim, ldb: ld,
                     c: out + b * lq * hd + h * headDim, ldc: hd, threads: inner)
        }
        withExtendedLifetime(dropped) {}
        withExtendedLifetime(scratch) {}
        withExtendedLifetime(pb) {}
    }
}

/// oneDNN's team size for GEMMs inside `Threading.parallelForBLAS(n)`: 1 when our threads split
/// the heads, all threads when the loop runs on the calling thread alone.
@inline(__always)
func attentionInnerThreads(_ n: Int) -> Int { min(Threading.count, n) <= 1 ? Threading.count : 1 }

/// Single-threaded fp32 → bf16 of `n` values (inside parallel loops).
@inline(__always)
func ck_convert(_ dst: UnsafeMutablePointer<UInt16>, _ src: UnsafePointer<Float>, _ n: Int) {
    ck_f32_to_bf16(dst, src, 0, n)
}

/// P = softmax_rows(scale · Q Kᵀ + mask) for one (batch, head) block from bf16 Q, K (row stride
/// `ld`) into fp32 `p` (`[Lq, Lk]`); forward and the recomputing backward share it, so the
/// backward's P is bit-identical to the forward's.
@inline(__always)
func attentionProbabilitiesBF16(_ p: UnsafeMutablePointer<Float>, q: UnsafePointer<UInt16>, k: UnsafePointer<UInt16>, ld: Int,
                                mask: UnsafePointer<Float>?, lq: Int, lk: Int, headDim: Int, scale: Float, threads: Int) {
    bf16gemm(transB: true, m: lq, n: lk, k: headDim, alpha: scale, a: q, lda: ld, b: k, ldb: ld, c: p, ldc: lk, threads: threads)
    if let mask {
        for i in 0..<lq {
            let row = p + i * lk
            for j in 0..<lk { row[j] += mask[j] }
        }
    }
    for i in 0..<lq { softmaxRow(p + i * lk, p + i * lk, lk) }
}

/// Attention backward in bf16 mixed precision, accumulating into fp32 dq, dk, dv (the strides of
/// the forward inputs); the math of `attentionBackward` with every matmul on bf16 operands:
/// dP = dO Vᵀ; dV += Pᵀ dO; dS = P ⊙ (dP − rowsum(dP ⊙ P)) (fp32); dQ += scale·dS K; dK += scale·dSᵀ Q.
/// P is the forward's (`probs`) or recomputed from the bf16 Q, K exactly as the forward did.
public func attentionBackwardBF16(dq: UnsafeMutablePointer<Float>?, dk: UnsafeMutablePointer<Float>?,
                                  dv: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                                  probs: UnsafePointer<Float>?,
                                  q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                                  v: UnsafePointer<Float>, ldv: Int, mask: UnsafePointer<Float>? = nil,
                                  batch: Int, heads: Int, lq: Int, lk: Int, headDim: Int, scale: Float,
                                  dropout: (p: Float, seed: UInt64)? = nil) {
    let hd = heads * headDim
    let qb = BF16Buffer(converting: q, rows: batch * lq, cols: hd, lds: ldq)
    let kb = BF16Buffer(converting: k, rows: batch * lk, cols: hd, lds: ldk)
    let vb = BF16Buffer(converting: v, rows: batch * lk, cols: hd, lds: ldv)
    attentionBackwardBF16(dq: dq, ldq: ldq, dk: dk, ldk: ldk, dv: dv, ldv: ldv, dout: dout, probs: probs,
                          qb: qb.pointer, kb: kb.pointer, vb: vb.pointer, ld: hd, mask: mask, batch: batch, heads: heads,
                          lq: lq, lk: lk, headDim: headDim, scale: scale, dropout: dropout)
    withExtendedLifetime((qb, kb, vb)) {}
}

/// `attentionBackwardBF16` on Q, K, V already rounded to bf16 (`[B·L, H·D]` with rows `ld`
/// apart, the bits the forward used); `ldq`, `ldk`, `ldv` are the row strides of `dq`, `dk`, `dv`.
public func attentionBackwardBF16(dq: UnsafeMutablePointer<Float>?, ldq: Int, dk: UnsafeMutablePointer<Float>?, ldk: Int,
                                  dv: UnsafeMutablePointer<Float>?, ldv: Int, dout: UnsafePointer<Float>,
                                  probs: UnsafePointer<Float>?,
                                  qb: UnsafePointer<UInt16>, kb: UnsafePointer<UInt16>, vb: UnsafePointer<UInt16>, ld: Int,
                                  mask: UnsafePointer<Float>? = nil,
                                  batch: Int, heads: Int, lq: Int, lk: Int, headDim: Int, scale: Float,
                                  dropout: (p: Float, seed: UInt64)? = nil) {
    let hd = heads * headDim
    let gb = BF16Buffer(converting: dout, count: batch * lq * hd)
    let inner = attentionInnerThreads(batch * heads)
    Threading.parallelForBLAS(batch * heads) { range in
        let scratch = Storage(count: (probs == nil ? 2 : 1) * lq * lk, zeroed: false)
        let dp = scratch.pointer
        let maskStorage = dropout.map { _ in Storage(count: 2 * lq * lk, zeroed: false) }
        let pb = BF16Buffer(count: lq * lk)
        for bh in range {
            let b = bh / heads, h = bh % heads
            let qo = b * lq * ldq + h * headDim, ko = b * lk * ldk + h * headDim, vo = b * lk * ldv + h * headDim
            let qbo = b * lq * ld + h * headDim, kbo = b * lk * ld + h * headDim, gbo = b * lq * hd + h * headDim
            let p: UnsafePointer<Float>
            if let probs {
                p = probs + bh * lq * lk
            } else {
                let r = scratch.pointer + lq * lk
                attentionProbabilitiesBF16(r, q: qb + qbo, k: kb + kbo, ld: ld, mask: mask.map { $0 + b * lk },
                                           lq: lq, lk: lk, headDim: headDim, scale: scale, threads: inner)
                p = UnsafePointer(r)
            }
            let dob = gb.pointer + gbo
            bf16gemm(transB: true, m: lq, n: lk, k: headDim, a: dob, lda: hd, b: vb + kbo, ldb: ld, c: dp, ldc: lk,
                     threads: inner)
            var pUsed = p
            if let dropout, let ms = maskStorage?.pointer {
                let m = ms, dropped = ms + lq * lk
                fillDropoutMask(m, count: lq * lk, p: dropout.p, seed: dropout.seed, stream: bh)
                for i in 0..<(lq * lk) { dropped[i] = p[i] * m[i]; dp[i] *= m[i] }
                pUsed = UnsafePointer(dropped)
            }
            if let dv {
                ck_convert(pb.pointer, pUsed, lq * lk)
                bf16gemm(transA: true, m: lk, n: headDim, k: lq, a: pb.pointer, lda: lk, b: dob, ldb: hd, beta: 1,
                         c: dv + vo, ldc: ldv, threads: inner)
            }
            for i in 0..<lq {
                let pr = p + i * lk, dr = dp + i * lk
                var s: Float = 0
                for j in 0..<lk { s += pr[j] * dr[j] }
                for j in 0..<lk { dr[j] = pr[j] * (dr[j] - s) }
            }
            guard dq != nil || dk != nil else { continue }
            ck_convert(pb.pointer, dp, lq * lk)  // bf16(dS)
            if let dq {
                bf16gemm(m: lq, n: headDim, k: lk, alpha: scale, a: pb.pointer, lda: lk, b: kb + kbo, ldb: ld, beta: 1,
                         c: dq + qo, ldc: ldq, threads: inner)
            }
            if let dk {
                bf16gemm(transA: true, m: lk, n: headDim, k: lq, alpha: scale, a: pb.pointer, lda: lk, b: qb + qbo,
                         ldb: ld, beta: 1, c: dk + ko, ldc: ldk, threads: inner)
            }
        }
        withExtendedLifetime(scratch) {}
        withExtendedLifetime(maskStorage) {}
        withExtendedLifetime(pb) {}
    }
    withExtendedLifetime(gb) {}
}
