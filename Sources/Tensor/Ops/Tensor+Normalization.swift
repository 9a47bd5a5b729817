extension Tensor {
    /// Layer normalisation over the last dimension (see `layerNormForward`).
    /// PyTorch counterpart: `F.layer_norm(x, [C], weight, bias, eps)`.
    public func layerNorm(_ weight: Tensor, _ bias: Tensor, eps: Float) -> Tensor {
        let c = shape.last ?? 1
        precondition(weight.count == c && bias.count == c, "layerNorm: weight \(weight.shape)/bias \(bias.shape) vs input \(shape)")
        let rows = count / c
        let out = Tensor(uninitialized: shape)
        let stats = Storage(count: 2 * rows, zeroed: false)
        layerNormForward(out: out.data, mean: stats.pointer, rstd: stats.pointer + rows, inp: data,
                         weight: weight.data, bias: bias.data, rows: rows, cols: c, eps: eps)
        if Tensor.needsGrad(self, weight, bias) {
            out.record([self, weight, bias]) { o in
                layerNormBackward(dinp: self.gradIfNeeded, dweight: weight.gradIfNeeded, dbias: bias.gradIfNeeded,
                                  dout: o.gradPointer, inp: self.data, weight: weight.data,
                                  mean: stats.pointer, rstd: stats.pointer + rows, rows: rows, cols: c)
            }
        }
        return out
    }

    /// x / max(‖x‖₂, eps) along the last dimension. PyTorch: `F.normalize(x, dim=-1)`.
    public func l2Normalized(eps: Float = 1e-12) -> Tensor {
        let c = shape.last ?? 1
        let rows = count / c
        let out = Tensor(uninitialized: shape)
        let norms = Storage(count: rows, zeroed: false)
        for r in 0..<rows {
            let x = data + r * c, y = out.data + r * c
            var s: Float = 0
            for j in 0..<c { s += x[j] * x[j] }
            let nrm = Swift.max(s.squareRoot(), eps)
            norms.pointer[r] = nrm
            for j in 0..<c { y[j] = x[j] / nrm }
        }
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                let g = o.gradPointer, dx = self.gradPointer
                for r in 0..<rows {
                    let nrm = norms.pointer[r]
                    let y = o.data + r * c, gy = g + r * c, d = dx + r * c
                    if nrm > eps {
                        var dot: Float = 0
                        for j in 0..<c { dot += gy[j] * y[j] }
                        for j in 0..<c { d[j] += (gy[j] - y[j] * dot) / nrm }
                    } else {
                        for j in 0..<c { d[j] += gy[j] / nrm }
                    }
                }
            }
        }
        return out
    }
}
