#if canImport(Glibc)
import Glibc
#endif
import Tensor

/// ITM hard-negative sampling from the in-batch contrastive similarities (spec §2.1 steps 9–10,
/// §2.3), as both ALBEF models do it:
///
///     w_i2t[i, :] = softmax(S_i2t[i, :B] + offset),  w_t2i likewise,
///     w[i, j] = 0 where excluded(i, j)            (not renormalised)
///     for b in 0..<B: negative image of text b  ~ Categorical(w_t2i[b])
///     for b in 0..<B: negative text of image b  ~ Categorical(w_i2t[b])
///
/// Pretraining (`model_pretrain.py`) uses offset 0 and excludes the diagonal; retrieval
/// (`model_retrieval.py`) adds 1e-4 and excludes every pair with the same image id
/// (`weights.masked_fill_(idx == idx.T, 0)`). PyTorch draws with `torch.multinomial(w[b], 1)`.
public enum HardNegativeSampler {
    /// Which pairs may not be drawn as negatives.
    public enum Exclusion: Sendable {
        /// (b, b): the pair itself (pretraining).
        case diagonal
        /// (i, j) with ids[i] == ids[j]: every caption of the same image (retrieval).
        case sameID([Int64])

        public func excludes(_ i: Int, _ j: Int) -> Bool {
            switch self {
            case .diagonal: return i == j
            case .sameID(let ids): return ids[i] == ids[j]
            }
        }
    }

    /// Sampling weights `[B][B]` from the first B columns of a `[B, B+Q]` similarity matrix:
    /// a row-wise softmax (max subtracted, Float) of `s + offset`, excluded entries set to 0.
    public static func weights(_ sim: Tensor, batch b: Int, offset: Float = 0, exclusion: Exclusion) -> [[Float]] {
        let n = sim.shape[1]
        precondition(sim.shape[0] == b && n >= b, "HardNegativeSampler.weights: similarities \(sim.shape) for batch \(b)")
        return (0..<b).map { r in
            var row = Array(UnsafeBufferPointer(start: sim.data + r * n, count: b))
            if offset != 0 { for j in 0..<b { row[j] += offset } }
            let mx = row.max() ?? 0
            var sum: Float = 0
            for j in 0..<b { row[j] = expf(row[j] - mx); sum += row[j] }
            for j in 0..<b { row[j] /= sum }
            for j in 0..<b where exclusion.excludes(r, j) { row[j] = 0 }
            return row
        }
    }

    /// One draw per row, in row order. A row whose weights are degenerate (all zero, or NaN;
    /// the reference raises "invalid multinomial distribution") falls back to a uniform draw
    /// over the allowed indices, taken cyclically from r + 1; if none is allowed (every caption
    /// of the batch is of the same image), over every other index; with B = 1, r itself.
    public static func draw(_ weights: [[Float]], exclusion: Exclusion, rng: inout RandomGenerator) -> [Int] {
        let b = weights.count
        return (0..<b).map { r in
            if let k = rng.categorical(weights: weights[r]) { return k }
            guard b > 1 else { return r }
            let others = (1..<b).map { (r + $0) % b }
            let allowed = others.filter { !exclusion.excludes(r, $0) }
            let pool = allowed.isEmpty ? others : allowed
            return pool[rng.int(below: pool.count)]
        }
    }

    /// Weights and draws for one step: (negative image of each text, negative text of each
    /// image), the image negatives drawn first as in the reference.
    public static func sample(simI2T: Tensor, simT2I: Tensor, batch b: Int, offset: Float = 0, exclusion: Exclusion,
                              rng: inout RandomGenerator) -> (image: [Int], text: [Int]) {
        let wI2T = weights(simI2T, batch: b, offset: offset, exclusion: exclusion)
        let wT2I = weights(simT2I, batch: b, offset: offset, exclusion: exclusion)
        let image = draw(wT2I, exclusion: exclusion, rng: &rng)
        let text = draw(wI2T, exclusion: exclusion, rng: &rng)
        return (image, text)
    }
}
