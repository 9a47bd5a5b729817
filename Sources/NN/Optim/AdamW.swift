import Tensor

/// AdamW with PyTorch (`torch.optim.AdamW`) semantics over a `FlatParameters` buffer.
///
/// Concretely, per element with gradient g at step t (t starts at 1):
/// ```
/// p ← p·(1 − lr·wd)
/// m ← β1·m + (1−β1)·g;   v ← β2·v + (1−β2)·g²
/// p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + eps)
/// ```
/// Weight decay per tensor follows ALBEF's `create_optimizer`: tensors that are 1-D or whose
/// key ends in `.bias` get 0, every other (including 0-dim `temp`, embeddings, `pos_embed`) gets `weightDecay`.
public final class AdamW {
    public var lr: Float
    public let beta1: Float, beta2: Float, eps: Float
    public let params: FlatParameters
    /// Moments, same layout as the parameters.
    public let m: Storage, v: Storage
    /// Number of steps taken.
    public var step: Int = 0
    /// Weight decay per segment.
    public let decay: [Float]
    /// Learning-rate multiplier per segment (1 everywhere unless set, e.g. a smaller rate for
    /// weights started from a pretrained checkpoint than for those trained from scratch).
    public var lrScale: [Float]

    public init(_ params: FlatParameters, lr: Float, weightDecay: Float, beta1: Float = 0.9, beta2: Float = 0.999,
                eps: Float = 1e-8, noDecay: (FlatParameters.Segment) -> Bool = AdamW.albefNoDecay) {
        self.params = params
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        m = Storage(count: params.count)
        v = Storage(count: params.count)
        decay = params.segments.map { noDecay($0) ? 0 : weightDecay }
        lrScale = [Float](repeating: 1, count: params.segments.count)
    }

    /// ALBEF's rule: no decay for 1-D tensors and names ending in `.bias`.
    public static func albefNoDecay(_ s: FlatParameters.Segment) -> Bool {
        s.shape.count == 1 || s.key.hasSuffix(".bias")
    }

    /// One update with the current gradients (the flat buffer).
    public func update() {
        guard let gbuf = params.gradients else { return }
        beginStep()
        update(segments: 0..<params.segments.count, gradientBase: gbuf.pointer)
    }

    /// Bias corrections of the current step (set by `beginStep`).
    var bc1: Float = 1, bc2Sqrt: Float = 1

    /// Starts step t+1: advances the counter and fixes lr/(1−β1ᵗ) and √(1−β2ᵗ) for every
    /// `update(segments:gradientBase:)` of this step (optimizer-in-backward updates bucket by bucket).
    public func beginStep() {
        step += 1
        bc1 = 1 - Float(pow1(Double(beta1), step))
        bc2Sqrt = (1 - Float(pow1(Double(beta2), step))).squareRoot()
    }

    /// Updates the parameters of `segments` (indices into `params.segments`) with gradients at
    /// `gradientBase + offset` (flat offsets). Same arithmetic per element as `update()`.
    public func update(segments: Range<Int>, gradientBase g: UnsafeMutablePointer<Float>) {
        let p = params.values.pointer, mp = m.pointer, vp = v.pointer
        let b1 = beta1, b2 = beta2, e = eps, bc2Sqrt = bc2Sqrt
        for si in segments {
            let s = params.segments[si]
            let lrS = lrScale[si] == 1 ? lr : lr * lrScale[si]
            let wdFactor = 1 - lrS * decay[si]
            let stepSize = lrS / bc1
            let update: (Range<Int>) -> Void = { range in
                adamWKernel(p: p + s.offset, g: g + s.offset, m: mp + s.offset, v: vp + s.offset, range: range, wdFactor: wdFactor,
                            beta1: b1, beta2: b2, stepSize: stepSize, bc2Sqrt: bc2Sqrt, eps: e)
            }
            // A weight split by bf16 GEMMs gets its fp32 bits back block by block just before
            // its update (one pass over it instead of two; the same bits: the update is per element).
            if BF16Weights.join(p + s.offset, count: s.count, eachBlock: update) { continue }
            Threading.parallelFor(s.count, grain: 1 << 15, update)
        }
    }
}

/// The AdamW element update over `range`, 8 lanes at a time (same arithmetic per element as
/// the scalar tail, so results do not depend on alignment or thread split).
@inline(__always)
func adamWKernel(p: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>,
                 v: UnsafeMutablePointer<Float>, range: Range<Int>, wdFactor: Float, beta1 b1: Float, beta2 b2: Float,
                 stepSize: Float, bc2Sqrt: Float, eps e: Float) {
    typealias V = SIMD8<Float>
    var i = range.lowerBound
    let end = range.upperBound
    let rb1 = 1 - b1, rb2 = 1 - b2
    while i + 8 <= end {
        let pr = UnsafeMutableRawPointer(p + i), gr = UnsafeMutableRawPointer(g + i)
        let mr = UnsafeMutableRawPointer(m + i), vr = UnsafeMutableRawPointer(v + i)
        let gi = gr.loadUnaligned(as: V.self)
        let mi = b1 * mr.loadUnaligned(as: V.self) + rb1 * gi
        let vi = b2 * vr.loadUnaligned(as: V.self) + rb2 * gi * gi
        mr.storeBytes(of: mi, as: V.self)
        vr.storeBytes(of: vi, as: V.self)
        let denom = vi.squareRoot() / bc2Sqrt + e
        let pv = pr.loadUnaligned(as: V.self) * wdFactor - stepSize * mi / denom
        pr.storeBytes(of: pv, as: V.self)
        i += 8
    }
    while i < end {
        let gi = g[i]
        let mi = b1 * m[i] + rb1 * gi
        let vi = b2 * v[i] + rb2 * gi * gi
        m[i] = mi
        v[i] = vi
        let denom = vi.squareRoot() / bc2Sqrt + e
        p[i] = p[i] * wdFactor - stepSize * mi / denom
        i += 1
    }
}

@inline(__always) func pow1(_ x: Double, _ n: Int) -> Double {
    var r = 1.0
    for _ in 0..<n { r *= x }
    return r
}
