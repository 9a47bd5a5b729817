import Tensor

/// Layer normalisation over the last dimension. Mirrors `torch.nn.LayerNorm(C, eps)`; keys `weight`, `bias`.
public final class LayerNorm: Module {
    public let weight: Tensor
    public let bias: Tensor
    public let eps: Float

    public init(_ width: Int, eps: Float) {
        weight = Tensor(repeating: 1, shape: [width])
        weight.requiresGrad = true
        bias = Tensor(zeros: [width], requiresGrad: true)
        self.eps = eps
    }

    public override var localParameters: [(String, Tensor)] { [("weight", weight), ("bias", bias)] }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.layerNorm(weight, bias, eps: eps) }
}
