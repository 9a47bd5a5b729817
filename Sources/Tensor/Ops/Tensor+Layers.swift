#if canImport(Glibc)
import Glibc
#endif

extension Tensor {
    /// Keep attention probabilities `[B, H, Lq, Lk]` for the backward (true) or recompute them
    /// there from Q, K and the mask (false, the default: bit-identical, one more Q Kᵀ per head,
    /// and the largest activation of a ViT block is not kept).
    nonisolated(unsafe) public static var keepAttentionProbabilities = false

    /// Multi-head scaled dot-product attention: q `[B, Lq, H·D]`, k/v `[B, Lk, H·D]`, additive
    /// key mask `[B, Lk]` (or nil) → `[B, Lq, H·D]` (heads concatenated in head order).
    /// See `attentionForward` for the math. PyTorch counterpart: BERT/timm self- and cross-attention.
    /// `dropout` (p, seed) applies inverted dropout to the attention probabilities (BERT's
    /// `attention_probs_dropout_prob`), the mask regenerated from the seed in the backward.
    ///
    /// `q`, `k` and `v` are consumed: in bf16 mode, when the caller passed its only reference
    /// to one (e.g. the output of the projection just computed) and no view shares its
    /// storage, the op keeps the bf16 copy its matmuls read for the backward and gives the fp32
    /// values back at once (`AttentionBF16Inputs`); the results are the same bits.
    public static func attention(q: consuming Tensor, k: consuming Tensor, v: consuming Tensor, heads: Int, mask: Tensor?, scale: Float,
                                 dropout: (p: Float, seed: UInt64)? = nil) -> Tensor {
        precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention: q/k/v must be [B, L, C]: \(q.shape) \(k.shape) \(v.shape)")
        let b = q.shape[0], lq = q.shape[1], c = q.shape[2], lk = k.shape[1]
        precondition(k.shape == v.shape && k.shape[0] == b && k.shape[2] == c && c % heads == 0,
                     "attention: shapes q \(q.shape) k \(k.shape) v \(v.shape), heads \(heads)")
        if let mask { precondition(mask.count == b * lk, "attention: mask \(mask.shape) != [\(b), \(lk)]") }
        // Sole references only (a tensor passed twice, or held elsewhere, is not unique).
        let release = (q: isKnownUniquelyReferenced(&q), k: isKnownUniquelyReferenced(&k), v: isKnownUniquelyReferenced(&v))
        return attentionCore(q: q, qOff: 0, ldq: c, k: k, kOff: 0, ldk: c, v: v, vOff: 0, ldv: c,
                             batch: b, heads: heads, lq: lq, lk: lk, width: c, mask: mask, scale: scale, dropout: dropout,
                             release: release)
    }

    /// Self-attention reading a packed `[B, L, 3C]` qkv (timm's fused `qkv` Linear: Q rows, then K, then V).
    /// `qkv` is consumed as `attention(q:k:v:)`'s inputs are.
    public static func attention(packedQKV qkv: consuming Tensor, heads: Int, scale: Float) -> Tensor {
        let b = qkv.shape[0], l = qkv.shape[1], c3 = qkv.shape[2], c = c3 / 3
        precondition(c3 == 3 * c && c % heads == 0, "attention: packed qkv \(qkv.shape), heads \(heads)")
        let unique = isKnownUniquelyReferenced(&qkv)
        return attentionCore(q: qkv, qOff: 0, ldq: c3, k: qkv, kOff: c, ldk: c3, v: qkv, vOff: 2 * c, ldv: c3,
                             batch: b, heads: heads, lq: l, lk: l, width: c, mask: nil, scale: scale,
                             release: (unique, unique, unique))
    }

    /// `release`: which of q, k, v the caller holds no other reference to (they may be one
    /// tensor). In bf16 mode with a bf16 backward those keep their bf16 copy for the backward
    /// and give their fp32 storage back when the forward is done (unless the
    /// `keep-fp32-inputs` ablation is set).
    static func attentionCore(q: Tensor, qOff: Int, ldq: Int, k: Tensor, kOff: Int, ldk: Int,
                              v: Tensor, vOff: Int, ldv: Int, batch: Int, heads: Int, lq: Int, lk: Int,
                              width: Int, mask: Tensor?, scale: Float, dropout: (p: Float, seed: UInt64)? = nil,
                              release: (q: Bool, k: Bool, v: Bool)) -> Tensor {
        let d = width / heads
        let out = Tensor(uninitialized: [batch, lq, width])
        let grad = Tensor.needsGrad(q, k, v)
        // P is kept for the backward only when asked (`Tensor.keepAttentionProbabilities`);
        // otherwise the backward recomputes it.
        let probs = grad && Tensor.keepAttentionProbabilities ? Storage(count: batch * heads * lq * lk, zeroed: false) : nil
        // The GEMM precision is read once: forward and backward use the same one.
        let bf16 = MatmulPrecision.isBF16 && !MatmulPrecision.ablated("attention-fp32")
        let bf16Backward = bf16 && !MatmulPrecision.ablated("backward-fp32")
        // Inputs converted to bf16 in their own memory and kept so for the backward (the fp32
        // values are then gone); `kept.ld` is the row stride of every bf16 operand.
        let keep = bf16 && grad && bf16Backward && !MatmulPrecision.ablated("keep-fp32-inputs")
        let kept = AttentionBF16Inputs(keeping: q, ldq: ldq, k: k, ldk: ldk, v: v, ldv: ldv, width: width,
                                       release: keep ? release : (false, false, false))
        if bf16 {
            let ops = kept.operands(q: q, qOff: qOff, ldq: ldq, k: k, kOff: kOff, ldk: ldk, v: v, vOff: vOff, ldv: ldv,
                                    rowsQ: batch * lq, rowsK: batch * lk)
            attentionForwardBF16(out: out.data, probs: probs?.pointer, qb: ops.q, kb: ops.k, vb: ops.v, ld: kept.ld,
                                 mask: mask?.data, batch: batch, heads: heads, lq: lq, lk: lk,
                                 headDim: d, scale: scale, dropout: dropout)
            withExtendedLifetime(ops.owners) {}
        } else {
            attentionForward(out: out.data, probs: probs?.pointer, q: q.data + qOff, ldq: ldq, k: k.data + kOff, ldk: ldk,
                             v: v.data + vOff, ldv: ldv, mask: mask?.data, batch: batch, heads: heads, lq: lq, lk: lk,
                             headDim: d, scale: scale, dropout: dropout)
        }
        if grad {
            let inputs = [q, k, v].reduce(into: [Tensor]()) { acc, t in if !acc.contains(where: { $0 === t }) { acc.append(t) } }
            out.record(inputs, readsOutput: false) { o in
                if bf16Backward {
                    let ops = kept.operands(q: q, qOff: qOff, ldq: ldq, k: k, kOff: kOff, ldk: ldk, v: v, vOff: vOff, ldv: ldv,
                                            rowsQ: batch * lq, rowsK: batch * lk)
                    attentionBackwardBF16(dq: q.gradIfNeeded.map { $0 + qOff }, ldq: ldq, dk: k.gradIfNeeded.map { $0 + kOff }, ldk: ldk,
                                          dv: v.gradIfNeeded.map { $0 + vOff }, ldv: ldv, dout: o.gradPointer,
                                          probs: probs.map { UnsafePointer($0.pointer) },
                                          qb: ops.q, kb: ops.k, vb: ops.v, ld: kept.ld, mask: mask.map { UnsafePointer($0.data) },
                                          batch: batch, heads: heads, lq: lq, lk: lk, headDim: d, scale: scale, dropout: dropout)
                    withExtendedLifetime(ops.owners) {}
                } else {
                    attentionBackward(dq: q.gradIfNeeded.map { $0 + qOff }, dk: k.gradIfNeeded.map { $0 + kOff },
                                      dv: v.gradIfNeeded.map { $0 + vOff }, dout: o.gradPointer, probs: probs.map { UnsafePointer($0.pointer) },
                                      q: q.data + qOff, ldq: ldq, k: k.data + kOff, ldk: ldk, v: v.data + vOff, ldv: ldv,
                                      mask: mask.map { UnsafePointer($0.data) },
                                      batch: batch, heads: heads, lq: lq, lk: lk, headDim: d, scale: scale, dropout: dropout)
                }
            }
        }
        return out
    }

    /// Embedding lookup of `ids` (any shape `S`) in this `[V, C]` table → `S + [C]`; the row
    /// `paddingIndex` gets no gradient from the lookup. PyTorch: `nn.Embedding(padding_idx:)`.
    public func embedding(_ ids: [Int32], shape idsShape: [Int], paddingIndex: Int32? = nil) -> Tensor {
        precondition(rank == 2, "embedding: table must be [V, C], got \(shape)")
        precondition(ids.count == idsShape.reduce(1, *), "embedding: \(ids.count) ids for shape \(idsShape)")
        let v = shape[0], c = shape[1]
        let out = Tensor(uninitialized: idsShape + [c])
        BF16Weights.join(data)  // a table split by a bf16 GEMM (the tied MLM decoder) reads whole again
        ids.withUnsafeBufferPointer { p in
            embeddingForward(out: out.data, table: data, ids: p.baseAddress!, count: ids.count, vocab: v, width: c)
        }
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                ids.withUnsafeBufferPointer { p in
                    embeddingBackward(dtable: self.gradPointer, dout: o.gradPointer, ids: p.baseAddress!,
                                      count: ids.count, width: c, paddingIndex: paddingIndex)
                }
            }
        }
        return out
    }

    /// Mean cross-entropy of these `[N, C]` logits against integer `labels` (ignore −100), over
    /// the non-ignored rows; 0 (not NaN) when every row is ignored. PyTorch: `F.cross_entropy`.
    public func crossEntropy(labels: [Int32], ignoreIndex: Int32 = -100) -> Tensor {
        let c = shape.last ?? 1, rows = count / c
        precondition(labels.count == rows, "crossEntropy: \(labels.count) labels for \(rows) rows")
        let (loss, valid) = labels.withUnsafeBufferPointer {
            crossEntropyForward(logits: data, labels: $0.baseAddress!, rows: rows, cols: c, ignoreIndex: ignoreIndex)
        }
        let out = Tensor(scalar: loss)
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                labels.withUnsafeBufferPointer {
                    crossEntropyBackward(dlogits: self.gradPointer, logits: self.data, labels: $0.baseAddress!,
                                         rows: rows, cols: c, valid: valid, gradOut: o.gradPointer[0],
                                         ignoreIndex: ignoreIndex)
                }
            }
        }
        return out
    }

    /// Mean over rows of −Σ q·log_softmax(x) for these `[N, C]` logits and constant soft targets q.
    public func softCrossEntropy(targets: Tensor) -> Tensor {
        precondition(targets.shape == shape, "softCrossEntropy: targets \(targets.shape) vs logits \(shape)")
        let c = shape.last ?? 1, rows = count / c
        let out = Tensor(scalar: softCrossEntropyForward(logits: data, targets: targets.data, rows: rows, cols: c))
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                softCrossEntropyBackward(dlogits: self.gradPointer, logits: self.data, targets: targets.data,
                                         rows: rows, cols: c, gradOut: o.gradPointer[0])
            }
        }
        return out
    }
}

/// The bf16 Q, K and V bf16 attention keeps for its backward in place of the fp32 inputs
/// (`Tensor.convertingStorageToBF16`): for each of q, k, v either its own memory, converted in
/// place (indices unchanged, so a packed qkv's rows stay `3C` apart), or nil (read from the fp32
/// tensor, converted to a dense scratch copy per use). All operands share one row stride `ld`.
struct AttentionBF16Inputs {
    let q: BF16Buffer?, k: BF16Buffer?, v: BF16Buffer?
    /// Row stride of every bf16 operand: a converted input's own stride, or `width` (dense copies).
    let ld: Int
    let width: Int

    /// Converts those of q, k, v in place that `release` says the caller holds no other
    /// reference to and whose storage nothing else shares; none if their strides would differ
    /// (a converted input keeps its stride, a copy is dense). A tensor passed as two of them
    /// (a packed qkv) is converted once. With `release` all false nothing is kept.
    init(keeping q: Tensor, ldq: Int, k: Tensor, ldk: Int, v: Tensor, ldv: Int, width: Int, release: (q: Bool, k: Bool, v: Bool)) {
        self.width = width
        let rel = (q: release.q && q.canReleaseStorage, k: release.k && k.canReleaseStorage, v: release.v && v.canReleaseStorage)
        let stride = rel.q ? ldq : rel.k ? ldk : rel.v ? ldv : width
        let consistent = [(rel.q, ldq), (rel.k, ldk), (rel.v, ldv)].allSatisfy { $0.0 ? $0.1 == stride : stride == width }
        guard consistent, rel.q || rel.k || rel.v else { self.q = nil; self.k = nil; self.v = nil; ld = width; return }
        ld = stride
        let qb = rel.q ? q.convertingStorageToBF16() : nil
        let kb = rel.k ? (k === q ? qb : k.convertingStorageToBF16()) : nil
        self.q = qb
        self.k = kb
        self.v = rel.v ? (v === q ? qb : v === k ? kb : v.convertingStorageToBF16()) : nil
    }

    /// Pointers to the bf16 Q, K, V at their offsets (the kept ones, or fresh dense copies of the
    /// fp32 inputs, `rows × width`), and the buffers that own them, to keep alive while in use.
    func operands(q: Tensor, qOff: Int, ldq: Int, k: Tensor, kOff: Int, ldk: Int, v: Tensor, vOff: Int, ldv: Int,
                  rowsQ: Int, rowsK: Int) -> (q: UnsafePointer<UInt16>, k: UnsafePointer<UInt16>, v: UnsafePointer<UInt16>,
                                              owners: (BF16Buffer, BF16Buffer, BF16Buffer)) {
        func operand(_ kept: BF16Buffer?, _ t: Tensor, _ off: Int, _ lds: Int, rows: Int) -> (UnsafePointer<UInt16>, BF16Buffer) {
            if let kept { return (UnsafePointer(kept.pointer + off), kept) }
            let b = BF16Buffer(converting: t.data + off, rows: rows, cols: width, lds: lds)
            return (UnsafePointer(b.pointer), b)
        }
        let qp = operand(self.q, q, qOff, ldq, rows: rowsQ)
        let kp = operand(self.k, k, kOff, ldk, rows: rowsK)
        let vp = operand(self.v, v, vOff, ldv, rows: rowsK)
        return (qp.0, kp.0, vp.0, (qp.1, kp.1, vp.1))
    }
}

/// What the in-place bf16 conversions of saved inputs (`Tensor.convertingStorageToBF16`, by
/// attention and `addingLinear`) did since the last `take`: tensors converted, bytes of their
/// buffers given back to the system, bytes of bf16 kept (bench-step prints it per step).
public enum ReleasedActivations {
    nonisolated(unsafe) private static var lock: pthread_mutex_t = {
        var m = pthread_mutex_t()
        pthread_mutex_init(&m, nil)
        return m
    }()
    nonisolated(unsafe) private static var totals = (tensors: 0, returned: 0, keptBF16: 0)

    static func note(returned: Int, keptBF16: Int) {
        pthread_mutex_lock(&lock)
        totals.tensors += 1
        totals.returned += returned
        totals.keptBF16 += keptBF16
        pthread_mutex_unlock(&lock)
    }

    /// (tensors converted, bytes returned to the system, bf16 bytes kept), then zeroed.
    public static func take() -> (tensors: Int, returned: Int, keptBF16: Int) {
        pthread_mutex_lock(&lock)
        defer { totals = (0, 0, 0); pthread_mutex_unlock(&lock) }
        return totals
    }
}
