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
    public static func attention(q: Tensor, k: Tensor, v: Tensor, heads: Int, mask: Tensor?, scale: Float,
                                 dropout: (p: Float, seed: UInt64)? = nil) -> Tensor {
        precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention: q/k/v must be [B, L, C]: \(q.shape) \(k.shape) \(v.shape)")
        let b = q.shape[0], lq = q.shape[1], c = q.shape[2], lk = k.shape[1]
        precondition(k.shape == v.shape && k.shape[0] == b && k.shape[2] == c && c % heads == 0,
                     "attention: shapes q \(q.shape) k \(k.shape) v \(v.shape), heads \(heads)")
        if let mask { precondition(mask.count == b * lk, "attention: mask \(mask.shape) != [\(b), \(lk)]") }
        return attentionCore(q: q, qOff: 0, ldq: c, k: k, kOff: 0, ldk: c, v: v, vOff: 0, ldv: c,
                             batch: b, heads: heads, lq: lq, lk: lk, width: c, mask: mask, scale: scale, dropout: dropout)
    }

    /// Self-attention reading a packed `[B, L, 3C]` qkv (timm's fused `qkv` Linear: Q rows, then K, then V).
    public static func attention(packedQKV qkv: Tensor, heads: Int, scale: Float) -> Tensor {
        let b = qkv.shape[0], l = qkv.shape[1], c3 = qkv.shape[2], c = c3 / 3
        precondition(c3 == 3 * c && c % heads == 0, "attention: packed qkv \(qkv.shape), heads \(heads)")
        return attentionCore(q: qkv, qOff: 0, ldq: c3, k: qkv, kOff: c, ldk: c3, v: qkv, vOff: 2 * c, ldv: c3,
                             batch: b, heads: heads, lq: l, lk: l, width: c, mask: nil, scale: scale)
    }

    static func attentionCore(q: Tensor, qOff: Int, ldq: Int, k: Tensor, kOff: Int, ldk: Int,
                              v: Tensor, vOff: Int, ldv: Int, batch: Int, heads: Int, lq: Int, lk: Int,
                              width: Int, mask: Tensor?, scale: Float, dropout: (p: Float, seed: UInt64)? = nil) -> Tensor {
        let d = width / heads
        let out = Tensor(uninitialized: [batch, lq, width])
        let grad = Tensor.needsGrad(q, k, v)
        // P is kept for the backward only when asked (`Tensor.keepAttentionProbabilities`);
        // otherwise the backward recomputes it.
        let probs = grad && Tensor.keepAttentionProbabilities ? Storage(count: batch * heads * lq * lk, zeroed: false) : nil
        // The GEMM precision is read once: forward and backward use the same one.
        let bf16 = MatmulPrecision.isBF16 && !MatmulPrecision.ablated("attention-fp32")
        let bf16Backward = bf16 && !MatmulPrecision.ablated("backward-fp32")
        if bf16 {
            attentionForwardBF16(out: out.data, probs: probs?.pointer, q: q.data + qOff, ldq: ldq, k: k.data + kOff, ldk: ldk,
                                 v: v.data + vOff, ldv: ldv, mask: mask?.data, batch: batch, heads: heads, lq: lq, lk: lk,
                                 headDim: d, scale: scale, dropout: dropout)
        } else {
            attentionForward(out: out.data, probs: probs?.pointer, q: q.data + qOff, ldq: ldq, k: k.data + kOff, ldk: ldk,
                             v: v.data + vOff, ldv: ldv, mask: mask?.data, batch: batch, heads: heads, lq: lq, lk: lk,
                             headDim: d, scale: scale, dropout: dropout)
        }
        if grad {
            let inputs = [q, k, v].reduce(into: [Tensor]()) { acc, t in if !acc.contains(where: { $0 === t }) { acc.append(t) } }
            out.record(inputs) { o in
                if bf16Backward {
                    attentionBackwardBF16(dq: q.gradIfNeeded.map { $0 + qOff }, dk: k.gradIfNeeded.map { $0 + kOff },
                                          dv: v.gradIfNeeded.map { $0 + vOff }, dout: o.gradPointer, probs: probs.map { UnsafePointer($0.pointer) },
                                          q: q.data + qOff, ldq: ldq, k: k.data + kOff, ldk: ldk, v: v.data + vOff, ldv: ldv,
                                          mask: mask.map { UnsafePointer($0.data) },
                                          batch: batch, heads: heads, lq: lq, lk: lk, headDim: d, scale: scale, dropout: dropout)
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
