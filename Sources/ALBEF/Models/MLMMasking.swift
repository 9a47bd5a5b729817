import Tensor

/// Special token ids that MLM masking needs (standard uncased BERT values by default).
public struct SpecialTokenIds: Sendable, Equatable {
    public var pad: Int32 = 0
    public var cls: Int32 = 101
    public var mask: Int32 = 103
    public init(pad: Int32 = 0, cls: Int32 = 101, mask: Int32 = 103) {
        self.pad = pad
        self.cls = cls
        self.mask = mask
    }
}

/// ALBEF's MLM masking (`ALBEF.mask`, ALBEF-SPEC §2.4) over a (batch, length) grid of ids.
///
/// Concretely, with independent draws over the whole B×L grid, in this order:
/// 1. M ~ Bernoulli(p) at every position; then M = false where id ∈ {[PAD], [CLS]};
/// 2. R ~ Bernoulli(0.8) at every position; R ∧ M → [MASK];
/// 3. Q ~ Bernoulli(0.5) at every position; Q ∧ M ∧ ¬R → U, where U ~ randint(0, vocabSize) is
///    drawn at every position (step 4, after all Bernoulli grids);
/// 5. otherwise the id is kept. `labels` = id where M, −100 elsewhere.
/// PyTorch counterpart: `torch.bernoulli(probability_matrix)` ×3 and `torch.randint(vocab, shape)`.
/// - Parameters:
///   - ids: (batch, length) row-major input ids.
///   - probability: `mlm_probability` (0.15).
///   - rng: consumed for exactly 4·B·L draws (plus rare rejections in `int(below:)`).
///   - maskedPositions: if given, replaces step 1 (for parity tests with injected masks).
/// - Returns: the masked input ids and the labels, both (batch, length).
public func maskTokens(ids: [Int32], batch: Int, length: Int, vocabSize: Int, probability: Double = 0.15,
                       rng: inout RandomGenerator, special: SpecialTokenIds = SpecialTokenIds(),
                       maskedPositions: [Bool]? = nil) -> (input: [Int32], labels: [Int32]) {
    let n = batch * length
    precondition(ids.count == n, "maskTokens: ids.count \(ids.count) != batch \(batch) × length \(length)")
    precondition(vocabSize > 0, "maskTokens: vocabSize must be positive")
    var masked = [Bool](repeating: false, count: n)
    if let given = maskedPositions {
        precondition(given.count == n, "maskTokens: maskedPositions.count \(given.count) != \(n)")
        masked = given
    } else {
        for i in 0..<n { masked[i] = rng.bernoulli(probability) }
    }
    for i in 0..<n where ids[i] == special.pad || ids[i] == special.cls { masked[i] = false }
    var replaced = [Bool](repeating: false, count: n)
    for i in 0..<n { replaced[i] = rng.bernoulli(0.8) }
    var randomized = [Bool](repeating: false, count: n)
    for i in 0..<n { randomized[i] = rng.bernoulli(0.5) }
    var randomIds = [Int32](repeating: 0, count: n)
    for i in 0..<n { randomIds[i] = Int32(rng.int(below: vocabSize)) }

    var input = ids
    var labels = [Int32](repeating: -100, count: n)
    for i in 0..<n where masked[i] {
        labels[i] = ids[i]
        if replaced[i] {
            input[i] = special.mask
        } else if randomized[i] {
            input[i] = randomIds[i]
        }
    }
    return (input, labels)
}
