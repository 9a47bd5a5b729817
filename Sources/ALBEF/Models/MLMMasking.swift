import Tensor

/// ALBEF's `mask()` for masked language modeling (spec §2.4).
///
/// Draw order over the whole `[B, L]` grid: Bernoulli(p) selects positions (never [PAD] or
/// [CLS]); labels = id there, −100 elsewhere; Bernoulli(0.8) → [MASK]; of the rest
/// Bernoulli(0.5) → a uniform id in [0, V); otherwise the token is kept.
public func albefMask(ids: [Int32], vocabSize: Int, probability: Double, padId: Int32 = 0, clsId: Int32 = 101,
                      maskId: Int32 = 103, rng: inout RandomGenerator) -> (input: [Int32], labels: [Int32]) {
    let n = ids.count
    var chosen = (0..<n).map { _ in rng.bernoulli(probability) }
    for i in 0..<n where ids[i] == padId || ids[i] == clsId { chosen[i] = false }
    var input = ids
    var labels = [Int32](repeating: -100, count: n)
    for i in 0..<n where chosen[i] { labels[i] = ids[i] }
    let replace = (0..<n).map { _ in rng.bernoulli(0.8) }
    for i in 0..<n where chosen[i] && replace[i] { input[i] = maskId }
    let random = (0..<n).map { _ in rng.bernoulli(0.5) }
    let words = (0..<n).map { _ in Int32(rng.int(below: vocabSize)) }
    for i in 0..<n where chosen[i] && !replace[i] && random[i] { input[i] = words[i] }
    return (input, labels)
}
