import NN
import Tensor

/// Which entries of the ITC similarity rows `[B, B+Q]` are positives.
public enum ITCPositives {
    /// Pretraining (`model_pretrain.py`): the diagonal of the in-batch block, y[b, b] = 1.
    case diagonal
    /// Retrieval (`model_retrieval.py`): a constant `[B, B+Q]` target matrix y, every entry
    /// sharing the row's image id (in the batch or in `idx_queue`) at 1/#positives.
    case targets(Tensor)
}

/// ALBEF's image–text contrastive loss with momentum distillation (spec §2.1 steps 4–6),
/// shared by the pretraining and the retrieval model.
public enum ContrastiveLoss {
    /// Positives by image id (`model_retrieval.py`): `idx_all = [idx | idx_queue]` `(B+Q)`,
    /// `pos_idx[i, j] = (idx[i] == idx_all[j])`, `sim_targets = pos_idx / pos_idx.sum(1)`.
    /// `queue` is the id queue *before* this step's enqueue. Each row has ≥ 1 positive (its own column).
    public static func idTargets(ids: [Int64], queue: [Int64]) -> (idxAll: [Int64], targets: Tensor) {
        let b = ids.count, all = ids + queue, n = all.count
        let t = Tensor(zeros: [b, n])
        for i in 0..<b {
            let positives = all.indices.filter { all[$0] == ids[i] }
            let w = Float(1) / Float(positives.count)
            for j in positives { t.data[i * n + j] = w }
        }
        return (all, t)
    }

    /// Distilled ITC targets from the momentum similarities `s` `[B, B+Q]` (no gradient):
    ///
    ///     q = α·softmax(s, dim=1) + (1 − α)·y
    ///
    /// with y the positives. `hardWeight` is 1 − α as the caller evaluates it (the pretraining
    /// model in Float, the retrieval model in double then rounded, as Python does).
    /// PyTorch: `alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * sim_targets`.
    public static func distilledTargets(momentumSimilarities s: Tensor, alpha: Float, hardWeight: Float,
                                        positives: ITCPositives) -> Tensor {
        let p = s.softmax()
        let b = s.shape[0], n = s.shape[1]
        switch positives {
        case .diagonal:
            for r in 0..<b {
                for j in 0..<n { p.data[r * n + j] *= alpha }
                p.data[r * n + r] += hardWeight
            }
        case .targets(let y):
            precondition(y.shape == s.shape, "distilledTargets: targets \(y.shape) vs similarities \(s.shape)")
            for i in 0..<(b * n) { p.data[i] = p.data[i] * alpha + hardWeight * y.data[i] }
        }
        return p
    }

    /// Similarities against the momentum features and the queue:
    /// `sim = feat @ [feat_mᵀ | queue] / τ` `[B, B+Q]` (gradient to `feat` and τ only).
    public static func similarities(_ feat: Tensor, momentum local: Tensor, queue: Tensor, temp: Tensor) -> Tensor {
        feat.similarity(local: local, queue: queue) / temp
    }

    /// L_i2t = mean_b −Σ_j q_i2t[b, j]·log_softmax(S_i2t[b])_j, likewise L_t2i, and
    /// L_itc = (L_i2t + L_t2i)/2.
    public static func loss(simI2T: Tensor, simT2I: Tensor, targetsI2T: Tensor, targetsT2I: Tensor)
        -> (i2t: Tensor, t2i: Tensor, ita: Tensor) {
        let i2t = simI2T.softCrossEntropy(targets: targetsI2T)
        let t2i = simT2I.softCrossEntropy(targets: targetsT2I)
        return (i2t, t2i, (i2t + t2i) * 0.5)
    }
}
