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

/// Embedding table. Mirrors `torch.nn.Embedding(V, C, padding_idx)`; key `weight` `[V, C]`.
public final class Embedding: Module {
    public let weight: Tensor
    public let paddingIndex: Int32?

    public init(_ count: Int, _ width: Int, paddingIndex: Int32? = nil) {
        weight = Tensor(zeros: [count, width], requiresGrad: true)
        self.paddingIndex = paddingIndex
    }

    public override var localParameters: [(String, Tensor)] { [("weight", weight)] }

    public func callAsFunction(_ ids: [Int32], shape: [Int]) -> Tensor {
        weight.embedding(ids, shape: shape, paddingIndex: paddingIndex)
    }
}

/// Dropout with probability p in training mode (identity in eval mode or when p = 0).
/// Mirrors `torch.nn.Dropout(p)` (different random bits). Has no keys.
public final class Dropout: Module {
    public let p: Float
    public let random: SharedRandom?

    public init(_ p: Float, random: SharedRandom?) {
        self.p = p
        self.random = random
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard isTraining, p > 0, let random else { return x }
        return x.dropout(p, rng: &random.generator)
    }
}
