/// Fused linear sublayers that keep only what their backward reads (the GELU output, the
/// normalised input and the sublayer output are recomputed or never stored). Each has the
/// arithmetic of the separate ops; tests check the results and gradients bit for bit.
extension Tensor {
    /// (in, out, rows) of `x·Wᵀ + b` for an input of `shape`, checked. Shared by every linear op.
    static func linearDimensions(_ op: String, input shape: [Int], _ weight: Tensor, _ bias: Tensor?) -> (inF: Int, outF: Int, n: Int) {
        precondition(weight.rank == 2, "\(op): weight must be [out, in], got \(weight.shape)")
        let inF = weight.shape[1], outF = weight.shape[0]
        precondition(shape.last == inF, "\(op): input \(shape) last dim != weight in-features \(inF)")
        if let bias { precondition(bias.count == outF, "\(op): bias \(bias.shape) != [\(outF)]") }
        return (inF, outF, shape.reduce(1, *) / inF)
    }

    /// out = (gelu?(a))·Wᵀ + b, the GELU output in a pooled temporary that is released at once.
    /// `aBF16`: `a` already rounded to bf16 (no GELU; `a.data` is then not read).
    static func linearOfActivation(_ a: Tensor, gelu: Bool, _ weight: Tensor, _ bias: Tensor?, into out: UnsafeMutablePointer<Float>,
                                   n: Int, inF: Int, outF: Int, bf16: Bool, aBF16: UnsafePointer<UInt16>? = nil) {
        precondition(aBF16 == nil || !gelu, "linearOfActivation: a bf16 input with GELU")
        let act = gelu ? Storage(count: a.count, zeroed: false) : nil
        if let act { geluForward(out: act.pointer, inp: a.data, count: a.count) }
        Tensor.linearForwardInPrecision(out: out, inp: act?.pointer ?? a.data, inpBF16: aBF16, weight: weight, bias: bias?.data, n: n,
                                        inFeatures: inF, outFeatures: outF, bf16: bf16)
    }

    /// Backward of `linearOfActivation` given d(out): the GELU output recomputed from `a`, then the
    /// linear's backward (dW, db, d(act)) and GELU's (da += d(act)·gelu'(a)).
    static func backwardLinearOfActivation(_ a: Tensor, gelu: Bool, _ weight: Tensor, _ bias: Tensor?, dout: UnsafePointer<Float>,
                                           n: Int, inF: Int, outF: Int, bf16: Bool, aBF16: UnsafePointer<UInt16>? = nil) {
        let act = gelu ? Storage(count: a.count, zeroed: false) : nil
        if let act { geluForward(out: act.pointer, inp: a.data, count: a.count) }
        let dact = gelu && a.requiresGrad ? Storage(count: a.count) : nil  // zeroed: linearBackward accumulates
        Tensor.linearBackwardInPrecision(dinp: gelu ? dact?.pointer : a.gradIfNeeded, dweight: weight.gradIfNeeded, dbias: bias?.gradIfNeeded,
                                         dout: dout, inp: act?.pointer ?? a.data, inpBF16: aBF16, weight: weight, n: n,
                                         inFeatures: inF, outFeatures: outF,
                                         bf16: bf16)
        if let dact, let da = a.gradIfNeeded { geluBackward(dinp: da, dout: dact.pointer, inp: a.data, count: a.count) }
    }

    /// `gelu(self).linear(weight, bias)` without keeping the GELU output: the backward recomputes
    /// it from `self` (the pre-activation, which GELU's own backward needs anyway). Saves one
    /// `[N, hidden]` activation per MLP — the largest tensors of a transformer block.
    /// PyTorch counterpart: `fc2(F.gelu(h))` (timm `Mlp`, HF `BertIntermediate` + `BertOutput.dense`).
    public func geluLinear(_ weight: Tensor, _ bias: Tensor?) -> Tensor {
        let (inF, outF, n) = Tensor.linearDimensions("geluLinear", input: shape, weight, bias)
        let out = Tensor(uninitialized: Array(shape.dropLast()) + [outF])
        let bf16 = MatmulPrecision.isBF16
        Tensor.linearOfActivation(self, gelu: true, weight, bias, into: out.data, n: n, inF: inF, outF: outF, bf16: bf16)
        if Tensor.needsGrad(self, weight, bias) {
            let h = self
            out.record([self, weight] + (bias.map { [$0] } ?? []), readsOutput: false) { o in
                Tensor.backwardLinearOfActivation(h, gelu: true, weight, bias, dout: o.gradPointer, n: n, inF: inF, outF: outF, bf16: bf16)
            }
        }
        return out
    }

    /// `layerNorm(γ, β, eps).linear(weight, bias)` without keeping the normalised input: the
    /// backward recomputes it from `self` with the same kernel (so the same values, and the same
    /// per-row mean and 1/σ, which it rewrites unchanged). Saves one `[N, C]` activation per
    /// pre-LN sublayer. PyTorch counterpart: `qkv(norm1(x))` / `fc1(norm2(x))` in a timm `Block`.
    public func layerNormLinear(_ gamma: Tensor, _ beta: Tensor, eps: Float, _ weight: Tensor, _ bias: Tensor?) -> Tensor {
        let (c, outF, rows) = Tensor.linearDimensions("layerNormLinear", input: shape, weight, bias)
        precondition(gamma.count == c && beta.count == c, "layerNormLinear: γ \(gamma.shape)/β \(beta.shape) vs input \(shape)")
        let out = Tensor(uninitialized: Array(shape.dropLast()) + [outF])
        let stats = Storage(count: 2 * rows, zeroed: false)
        let x = self
        let bf16 = MatmulPrecision.isBF16
        func normalise(into normed: Storage) {
            layerNormForward(out: normed.pointer, mean: stats.pointer, rstd: stats.pointer + rows, inp: x.data,
                             weight: gamma.data, bias: beta.data, rows: rows, cols: c, eps: eps)
        }
        do {
            let normed = Storage(count: count, zeroed: false)
            normalise(into: normed)
            Tensor.linearForwardInPrecision(out: out.data, inp: normed.pointer, weight: weight, bias: bias?.data, n: rows,
                                            inFeatures: c, outFeatures: outF, bf16: bf16)
        }
        if Tensor.needsGrad(self, gamma, beta, weight, bias) {
            out.record([self, gamma, beta, weight] + (bias.map { [$0] } ?? []), readsOutput: false) { o in
                let normed = Storage(count: x.count, zeroed: false)
                normalise(into: normed)
                let needNormGrad = x.requiresGrad || gamma.requiresGrad || beta.requiresGrad
                let dnormed = needNormGrad ? Storage(count: x.count) : nil  // zeroed: linearBackward accumulates
                Tensor.linearBackwardInPrecision(dinp: dnormed?.pointer, dweight: weight.gradIfNeeded, dbias: bias?.gradIfNeeded,
                                                 dout: o.gradPointer, inp: normed.pointer, weight: weight, n: rows,
                                                 inFeatures: c, outFeatures: outF, bf16: bf16)
                if let dnormed {
                    layerNormBackward(dinp: x.gradIfNeeded, dweight: gamma.gradIfNeeded, dbias: beta.gradIfNeeded,
                                      dout: dnormed.pointer, inp: x.data, weight: gamma.data,
                                      mean: stats.pointer, rstd: stats.pointer + rows, rows: rows, cols: c)
                }
            }
        }
        return out
    }

    /// `self + linear(a)` (or `self + linear(gelu(a))` with `gelu`), the residual connection of a
    /// transformer sublayer, without keeping the sublayer's output (or the GELU output): neither
    /// the addition's backward nor the linear's reads them.
    /// PyTorch counterpart: `x + proj(ctx)`, `x + fc2(F.gelu(h))` in a timm `Block`.
    public func addingLinear(_ a: consuming Tensor, _ weight: Tensor, _ bias: Tensor?, gelu: Bool = false) -> Tensor {
        var unused = RandomGenerator(seed: 0)
        return addingLinear(a, weight, bias, gelu: gelu, dropout: 0, rng: &unused)
    }

    /// `self + dropout(linear(gelu?(a)))`, BERT's `BertSelfOutput`/`BertOutput` before the
    /// LayerNorm: the dropout mask is replayed from the generator state in the backward (the same
    /// draws as `Tensor.dropout`), and neither the linear's nor the dropout's output is kept.
    ///
    /// `a` is consumed: in bf16 mode, without GELU, when the weight gradient runs in bf16 and the
    /// caller passed its only reference (e.g. attention's fresh output), `a` is kept for the
    /// backward only as the bf16 copy both GEMMs read, converted in its own memory
    /// (`Tensor.convertingStorageToBF16`; ablation `keep-fp32-inputs`); the results are the same bits.
    public func addingLinear(_ a: consuming Tensor, _ weight: Tensor, _ bias: Tensor?, gelu: Bool = false, dropout p: Float,
                             rng: inout RandomGenerator) -> Tensor {
        precondition(p >= 0 && p < 1, "addingLinear: dropout p must be in [0, 1), got \(p)")
        let (inF, outF, n) = Tensor.linearDimensions("addingLinear", input: a.shape, weight, bias)
        precondition(shape == Array(a.shape.dropLast()) + [outF], "addingLinear: residual \(shape) vs sublayer output \(Array(a.shape.dropLast()) + [outF])")
        let start = rng
        let out = Tensor(uninitialized: shape)
        let bf16 = MatmulPrecision.isBF16
        let grad = Tensor.needsGrad(self, a, weight, bias)
        // Only the weight-gradient GEMM reads `a` again (d(a) = d(lin)·W does not).
        let keptA = bf16 && grad && !gelu && Tensor.weightGradientInBF16(weight, bf16: true)
            && !MatmulPrecision.ablated("keep-fp32-inputs") && isKnownUniquelyReferenced(&a) && a.canReleaseStorage
            ? a.convertingStorageToBF16() : nil
        let a = consume a  // the backward captures it
        do {
            let lin = Storage(count: count, zeroed: false)
            Tensor.linearOfActivation(a, gelu: gelu, weight, bias, into: lin.pointer, n: n, inF: inF, outF: outF, bf16: bf16,
                                      aBF16: keptA.map { UnsafePointer($0.pointer) })
            let x = data, l = lin.pointer, y = out.data
            if p > 0 { applyDropout(p, rng: &rng, count: count) { i, m in l[i] = l[i] * m } }
            Threading.parallelFor(count, grain: 1 << 14) { r in for i in r { y[i] = x[i] + l[i] } }
        }
        if grad {
            let x = self
            out.record([self, a, weight] + (bias.map { [$0] } ?? []), readsOutput: false) { o in
                let og = o.gradPointer
                if let dx = x.gradIfNeeded { saxpy(x.count, alpha: 1, x: og, y: dx) }
                // Through the dropout: d(linear output) = dout ⊙ mask, the mask replayed.
                let masked = p > 0 ? Storage(count: x.count, zeroed: false) : nil
                if let mg = masked?.pointer {
                    var r = start
                    applyDropout(p, rng: &r, count: x.count) { i, m in mg[i] = og[i] * m }
                }
                Tensor.backwardLinearOfActivation(a, gelu: gelu, weight, bias, dout: masked?.pointer ?? og, n: n, inF: inF, outF: outF,
                                                  bf16: bf16, aBF16: keptA.map { UnsafePointer($0.pointer) })
                withExtendedLifetime(keptA) {}
            }
        }
        return out
    }
}
