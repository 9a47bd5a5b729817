#if canImport(Glibc)
import Glibc
#endif

extension Tensor {
    /// GELU (erf form). PyTorch: `F.gelu(x)`.
    public func gelu() -> Tensor {
        let out = Tensor(uninitialized: shape)
        geluForward(out: out.data, inp: data, count: count)
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                geluBackward(dinp: self.gradPointer, dout: o.gradPointer, inp: self.data, count: self.count)
            }
        }
        return out
    }

    /// Softmax over the last dimension. PyTorch: `x.softmax(-1)`.
    public func softmax() -> Tensor {
        let c = shape.last ?? 1
        let out = Tensor(uninitialized: shape)
        softmaxForward(out: out.data, inp: data, rows: count / c, cols: c)
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                softmaxBackward(dinp: self.gradPointer, dout: o.gradPointer, out: o.data, rows: o.count / c, cols: c)
            }
        }
        return out
    }

    /// Log-softmax over the last dimension. PyTorch: `F.log_softmax(x, -1)`.
    public func logSoftmax() -> Tensor {
        let c = shape.last ?? 1
        let out = Tensor(uninitialized: shape)
        logSoftmaxForward(out: out.data, inp: data, rows: count / c, cols: c)
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                logSoftmaxBackward(dinp: self.gradPointer, dout: o.gradPointer, out: o.data, rows: o.count / c, cols: c)
            }
        }
        return out
    }

    /// Elementwise map with its derivative expressed from input x and output y.
    func unary(_ f: (Float) -> Float, _ df: @escaping (Float, Float) -> Float) -> Tensor {
        let out = Tensor(uninitialized: shape)
        for i in 0..<count { out.data[i] = f(data[i]) }
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                let g = o.gradPointer, d = self.gradPointer
                for i in 0..<self.count { d[i] += g[i] * df(self.data[i], o.data[i]) }
            }
        }
        return out
    }

    /// eˣ elementwise.
    public func exp() -> Tensor { unary({ expf($0) }, { _, y in y }) }
    /// Natural log elementwise.
    public func log() -> Tensor { unary({ logf($0) }, { x, _ in 1 / x }) }
    /// tanh elementwise.
    public func tanh() -> Tensor { unary({ tanhf($0) }, { _, y in 1 - y * y }) }
    /// √x elementwise.
    public func sqrt() -> Tensor { unary({ $0.squareRoot() }, { _, y in 0.5 / y }) }
    /// −x.
    public func negated() -> Tensor { unary({ -$0 }, { _, _ in -1 }) }

    /// Clamps into [low, high]; the gradient passes where low ≤ x ≤ high (as `torch.clamp`).
    public func clamped(min low: Float, max high: Float) -> Tensor {
        unary({ Swift.min(Swift.max($0, low), high) }, { x, _ in (x >= low && x <= high) ? 1 : 0 })
    }

    /// Inverted dropout: zero with probability p, scale survivors by 1/(1−p). Identity when p = 0
    /// (no random draws then, so a dropout-free model consumes no randomness).
    /// PyTorch counterpart: `F.dropout(x, p, training=True)` (different random bits).
    public func dropout(_ p: Float, rng: inout RandomGenerator) -> Tensor {
        precondition(p >= 0 && p < 1, "dropout: p must be in [0, 1), got \(p)")
        if p == 0 { return self }
        // The mask is not stored: the backward replays the generator from the state it had here
        // (the same draws in the same order), so no `[N]` mask is kept alive.
        let start = rng
        let out = Tensor(uninitialized: shape)
        applyDropout(p, rng: &rng, count: count) { i, m in out.data[i] = data[i] * m }
        if Tensor.needsGrad(self) {
            out.record([self]) { o in
                let g = o.gradPointer, d = self.gradPointer
                var r = start
                applyDropout(p, rng: &r, count: self.count) { i, m in d[i] += g[i] * m }
            }
        }
        return out
    }
}

/// Draws the inverted-dropout multiplier of each of `count` elements in order (0 with probability
/// p, else 1/(1−p)) and hands it to `body(i, m)`. Forward and replaying backward share this.
@inline(__always)
func applyDropout(_ p: Float, rng: inout RandomGenerator, count: Int, _ body: (Int, Float) -> Void) {
    let scale = 1 / (1 - p)
    for i in 0..<count { body(i, rng.nextFloat() < p ? 0 : scale) }
}
