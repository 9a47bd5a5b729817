import Tensor

/// Fully connected layer y = x·Wᵀ + b. Mirrors `torch.nn.Linear`; keys: `weight` `[out, in]`, `bias` `[out]`.
public final class Linear: Module {
    public let weight: Tensor
    public let bias: Tensor?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        weight = Tensor(zeros: [outFeatures, inFeatures], requiresGrad: true)
        weight.bf16Splittable = true  // read only by the linear ops (which join it for fp32)
        self.bias = bias ? Tensor(zeros: [outFeatures], requiresGrad: true) : nil
    }

    public override var localParameters: [(String, Tensor)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.linear(weight, bias) }

    /// N(0, std²) weights, zero bias (BERT's `_init_weights`).
    public func initNormal(std: Float, rng: inout RandomGenerator) {
        for i in 0..<weight.count { weight.data[i] = rng.normal() * std }
        bias?.data.update(repeating: 0, count: bias!.count)
    }

    /// Truncated normal N(0, std²) restricted to [−2, 2] (timm `trunc_normal_(std=.02)`), zero bias.
    public func initTruncNormal(std: Float, rng: inout RandomGenerator) {
        fillTruncNormal(weight, std: std, rng: &rng)
        bias?.data.update(repeating: 0, count: bias!.count)
    }

    /// PyTorch's default: kaiming-uniform(a=√5) ⇒ W, b ~ U(±1/√in).
    public func initDefault(rng: inout RandomGenerator) {
        let bound = 1 / Float(weight.shape[1]).squareRoot()
        for i in 0..<weight.count { weight.data[i] = rng.uniform(-bound, bound) }
        if let bias { for i in 0..<bias.count { bias.data[i] = rng.uniform(-bound, bound) } }
    }
}

/// Fills with N(0, std²) truncated to [−2, 2] (absolute bounds, as timm's `trunc_normal_`).
public func fillTruncNormal(_ t: Tensor, std: Float, rng: inout RandomGenerator) {
    for i in 0..<t.count {
        var v = rng.normal() * std
        while v < -2 || v > 2 { v = rng.normal() * std }
        t.data[i] = v
    }
}
