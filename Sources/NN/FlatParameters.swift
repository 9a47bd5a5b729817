import Tensor

/// Every trainable tensor of a model packed into one contiguous buffer, with the gradients in a
/// second buffer of the same layout (llm.c style).
///
/// After `pack`, each parameter tensor is a view into `values` and its gradient a view into
/// `gradients`, so zero-grad is one memset, AdamW is one pass, a momentum EMA over a module pair
/// is one `saxpby` and gradient buckets are contiguous slices. Tied tensors are packed once.
public final class FlatParameters {
    /// One packed tensor: its first key, offset and length in the flat buffers.
    public struct Segment: Sendable {
        public var key: String
        public var offset: Int
        public var count: Int
        public var shape: [Int]
    }

    /// Where gradients live.
    public enum GradientLayout: Sendable {
        /// One buffer of the parameters' layout (`gradients`), views attached to every tensor.
        case flat
        /// No buffer here: tensors require gradients and get them bound on demand by their
        /// `gradientBinder` (optimizer-in-backward keeps only unfinished buckets alive).
        case deferred
        /// Not trainable (momentum copies).
        case none
    }

    public let values: Storage
    /// The flat gradient buffer (`.flat` layout only).
    public let gradients: Storage?
    public let gradientLayout: GradientLayout
    public let segments: [Segment]
    public let tensors: [Tensor]
    public var count: Int { values.count }

    /// Packs `params` (in the given order, duplicates by identity skipped) and re-points them.
    /// - Parameter withGradients: allocate a gradient buffer and attach views of it.
    public convenience init(_ params: [(String, Tensor)], withGradients: Bool = true) {
        self.init(params, gradients: withGradients ? .flat : .none)
    }

    /// Packs `params` with the given gradient layout.
    public init(_ params: [(String, Tensor)], gradients layout: GradientLayout) {
        var seen = Set<ObjectIdentifier>()
        var segs: [Segment] = []
        var ts: [Tensor] = []
        var off = 0
        for (k, t) in params where seen.insert(ObjectIdentifier(t)).inserted {
            segs.append(Segment(key: k, offset: off, count: t.count, shape: t.shape))
            ts.append(t)
            off += t.count
        }
        values = Storage(count: off)
        gradientLayout = layout
        gradients = layout == .flat ? Storage(count: off) : nil
        segments = segs
        tensors = ts
        for (s, t) in zip(segs, ts) {
            let v = Storage(borrowing: values.pointer + s.offset, count: s.count, owner: values)
            let g = gradients.map { Storage(borrowing: $0.pointer + s.offset, count: s.count, owner: $0) }
            t.rebind(to: v, gradient: g)
            t.requiresGrad = layout != .none
        }
    }

    /// Sets every gradient to zero (one memset).
    public func zeroGradients() {
        gradients?.pointer.update(repeating: 0, count: count)
    }

    /// Σ g² over all gradients, accumulated in Double in layout order.
    public func gradientNormSquared() -> Double {
        guard let g = gradients?.pointer else { return 0 }
        var s = 0.0
        for i in 0..<count { s += Double(g[i]) * Double(g[i]) }
        return s
    }

    /// Segment of `key`, if packed.
    public func segment(_ key: String) -> Segment? { segments.first { $0.key == key } }
}
