import Tensor

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
