extension Tensor {
    /// `gelu(self).linear(weight, bias)` without keeping the GELU output: the backward recomputes
    /// it from `self` (the pre-activation, which GELU's own backward needs anyway). Saves one
    /// `[N, hidden]` activation per MLP — the largest tensors of a transformer block — for one
    /// elementwise pass in the backward. Same arithmetic as the two separate ops.
    /// PyTorch counterpart: `fc2(F.gelu(h))` (timm `Mlp`, HF `BertIntermediate` + `BertOutput.dense`).
    public func geluLinear(_ weight: Tensor, _ bias: Tensor?) -> Tensor {
        precondition(weight.rank == 2, "geluLinear: weight must be [out, in], got \(weight.shape)")
        let inF = weight.shape[1], outF = weight.shape[0]
        precondition(shape.last == inF, "geluLinear: input \(shape) last dim != weight in-features \(inF)")
        if let bias { precondition(bias.count == outF, "geluLinear: bias \(bias.shape) != [\(outF)]") }
        let n = count / inF
        let out = Tensor(uninitialized: Array(shape.dropLast()) + [outF])
        do {
            let act = Storage(count: count, zeroed: false)
            geluForward(out: act.pointer, inp: data, count: count)
            linearForward(out: out.data, inp: act.pointer, weight: weight.data, bias: bias?.data, n: n,
                          inFeatures: inF, outFeatures: outF)
        }
        if Tensor.needsGrad(self, weight, bias) {
            let h = self, total = count
            out.record([self, weight] + (bias.map { [$0] } ?? [])) { o in
                let act = Storage(count: total, zeroed: false)
                geluForward(out: act.pointer, inp: h.data, count: total)
                let dact = h.requiresGrad ? Storage(count: total) : nil  // zeroed: linearBackward accumulates
                linearBackward(dinp: dact?.pointer, dweight: weight.gradIfNeeded, dbias: bias?.gradIfNeeded,
                               dout: o.gradPointer, inp: act.pointer, weight: weight.data, n: n,
                               inFeatures: inF, outFeatures: outF)
                if let dact, let dh = h.gradIfNeeded {
                    geluBackward(dinp: dh, dout: dact.pointer, inp: h.data, count: total)
                }
            }
        }
        return out
    }
}

extension Tensor {
    /// `layerNorm(γ, β, eps).linear(weight, bias)` without keeping the normalised input: the
    /// backward recomputes it from `self` (the same kernel, so the same values) and uses the
    /// forward's per-row mean and 1/σ. Saves one `[N, C]` activation per pre-LN sublayer.
    /// PyTorch counterpart: `qkv(norm1(x))` / `fc1(norm2(x))` in a timm `Block`.
    public func layerNormLinear(_ gamma: Tensor, _ beta: Tensor, eps: Float, _ weight: Tensor, _ bias: Tensor?) -> Tensor {
        let c = shape.last ?? 1
        precondition(gamma.count == c && beta.count == c, "layerNormLinear: γ \(gamma.shape)/β \(beta.shape) vs input \(shape)")
        precondition(weight.rank == 2 && weight.shape[1] == c, "layerNormLinear: weight \(weight.shape) vs input \(shape)")
        let outF = weight.shape[0], rows = count / c
        if let bias { precondition(bias.count == outF, "layerNormLinear: bias \(bias.shape) != [\(outF)]") }
        let out = Tensor(uninitialized: Array(shape.dropLast()) + [outF])
        let stats = Storage(count: 2 * rows, zeroed: false)
        do {
            let normed = Storage(count: count, zeroed: false)
            layerNormForward(out: normed.pointer, mean: stats.pointer, rstd: stats.pointer + rows, inp: data,
                             weight: gamma.data, bias: beta.data, rows: rows, cols: c, eps: eps)
            linearForward(out: out.data, inp: normed.pointer, weight: weight.data, bias: bias?.data, n: rows,
                          inFeatures: c, outFeatures: outF)
        }
        if Tensor.needsGrad(self, gamma, beta, weight, bias) {
            let x = self
            out.record([self, gamma, beta, weight] + (bias.map { [$0] } ?? [])) { o in
                let normed = Storage(count: x.count, zeroed: false)
                let scratchStats = Storage(count: 2 * rows, zeroed: false)
                layerNormForward(out: normed.pointer, mean: scratchStats.pointer, rstd: scratchStats.pointer + rows, inp: x.data,
                                 weight: gamma.data, bias: beta.data, rows: rows, cols: c, eps: eps)
                let needNormGrad = x.requiresGrad || gamma.requiresGrad || beta.requiresGrad
                let dnormed = needNormGrad ? Storage(count: x.count) : nil  // zeroed: linearBackward accumulates
                linearBackward(dinp: dnormed?.pointer, dweight: weight.gradIfNeeded, dbias: bias?.gradIfNeeded,
                               dout: o.gradPointer, inp: normed.pointer, weight: weight.data, n: rows,
                               inFeatures: c, outFeatures: outF)
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
    /// the addition's backward nor the linear's reads them. Same arithmetic as the separate ops.
    /// PyTorch counterpart: `x + proj(ctx)`, `x + fc2(F.gelu(h))` in a timm `Block`.
    public func addingLinear(_ a: Tensor, _ weight: Tensor, _ bias: Tensor?, gelu: Bool = false) -> Tensor {
        var unused = RandomGenerator(seed: 0)
        return addingLinear(a, weight, bias, gelu: gelu, dropout: 0, rng: &unused)
    }

    /// `self + dropout(linear(gelu?(a)))`, BERT's `BertSelfOutput`/`BertOutput` before the
    /// LayerNorm: the dropout mask is replayed from the generator state in the backward (the same
    /// draws as `Tensor.dropout`), and neither the linear's nor the dropout's output is kept.
    public func addingLinear(_ a: Tensor, _ weight: Tensor, _ bias: Tensor?, gelu: Bool = false, dropout p: Float,
                             rng: inout RandomGenerator) -> Tensor {
        precondition(p >= 0 && p < 1, "addingLinear: dropout p must be in [0, 1), got \(p)")
        let start = rng
        precondition(weight.rank == 2, "addingLinear: weight must be [out, in], got \(weight.shape)")
        let inF = weight.shape[1], outF = weight.shape[0]
        precondition(a.shape.last == inF, "addingLinear: input \(a.shape) last dim != weight in-features \(inF)")
        let n = a.count / inF
        precondition(shape == Array(a.shape.dropLast()) + [outF], "addingLinear: residual \(shape) vs sublayer output \(Array(a.shape.dropLast()) + [outF])")
        if let bias { precondition(bias.count == outF, "addingLinear: bias \(bias.shape) != [\(outF)]") }
        let out = Tensor(uninitialized: shape)
        do {
            let act = gelu ? Storage(count: a.count, zeroed: false) : nil
            if let act { geluForward(out: act.pointer, inp: a.data, count: a.count) }
            let lin = Storage(count: count, zeroed: false)
            linearForward(out: lin.pointer, inp: act?.pointer ?? a.data, weight: weight.data, bias: bias?.data, n: n,
                          inFeatures: inF, outFeatures: outF)
            let x = data, l = lin.pointer, y = out.data
            if p > 0 { applyDropout(p, rng: &rng, count: count) { i, m in l[i] = l[i] * m } }
            Threading.parallelFor(count, grain: 1 << 14) { r in for i in r { y[i] = x[i] + l[i] } }
        }
        if Tensor.needsGrad(self, a, weight, bias) {
            let x = self, total = a.count
            let inputs = [self, a, weight] + (bias.map { [$0] } ?? [])
            out.record(inputs) { o in
                let og = o.gradPointer
                if let dx = x.gradIfNeeded {
                    let cnt = x.count
                    Threading.parallelFor(cnt, grain: 1 << 14) { r in for i in r { dx[i] += og[i] } }
                }
                // Through the dropout: d(linear output) = dout ⊙ mask, the mask replayed.
                let masked = p > 0 ? Storage(count: x.count) : nil
                if let masked {
                    let mg = masked.pointer
                    var r = start
                    applyDropout(p, rng: &r, count: x.count) { i, m in mg[i] += og[i] * m }
                }
                let g = masked?.pointer ?? og
                let act = gelu ? Storage(count: total, zeroed: false) : nil
                if let act { geluForward(out: act.pointer, inp: a.data, count: total) }
                let dact = gelu && a.requiresGrad ? Storage(count: total) : nil  // zeroed: linearBackward accumulates
                linearBackward(dinp: gelu ? dact?.pointer : a.gradIfNeeded, dweight: weight.gradIfNeeded,
                               dbias: bias?.gradIfNeeded, dout: g, inp: act?.pointer ?? a.data, weight: weight.data,
                               n: n, inFeatures: inF, outFeatures: outF)
                if let dact, let da = a.gradIfNeeded { geluBackward(dinp: da, dout: dact.pointer, inp: a.data, count: total) }
            }
        }
        return out
    }
}
