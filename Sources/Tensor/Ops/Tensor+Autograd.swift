extension Tensor {
    /// Calls `body` with this tensor's gradient pointer when gradients flow into it.
    @inline(__always)
    func accumulateGrad(_ body: (UnsafeMutablePointer<Float>) -> Void) {
        if requiresGrad { body(gradPointer) }
    }

    /// The gradient pointer when gradients flow into it, else nil.
    @inline(__always)
    var gradIfNeeded: UnsafeMutablePointer<Float>? { requiresGrad ? gradPointer : nil }
}
