import Tensor

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
