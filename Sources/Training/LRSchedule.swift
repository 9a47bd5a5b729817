import Foundation

/// Learning-rate schedules. `lr(epoch:iteration:)` is the rate used by the optimizer step of
/// that iteration (0-based within the epoch).
public enum LRSchedule: Equatable, Sendable {
    /// ALBEF's `Pretrain.py` + timm `CosineLRScheduler` (spec §4.2): in epoch 0 a stair warmup
    /// from `warmupLR` to `baseLR` in `warmupEpochs` stairs of `stepSize` iterations (lr of
    /// iteration i is warmupLR + k·Δ with k = ⌊(i−1)/stepSize⌋ for i ≥ 1, k = 0 at i = 0, and
    /// baseLR once k reaches warmupEpochs); from epoch e ≥ 1 a constant per-epoch cosine
    /// minLR + ½(baseLR − minLR)(1 + cos(π·e/epochs)).
    case albef(baseLR: Double, warmupLR: Double, minLR: Double, warmupEpochs: Int, stepSize: Int, epochs: Int)
    /// Linear warmup over `warmupSteps` global steps, then cosine to `minLR` at `totalSteps`.
    case cosinePerStep(baseLR: Double, minLR: Double, warmupSteps: Int, totalSteps: Int)
    /// A constant rate.
    case constant(Double)

    public func lr(epoch: Int, iteration: Int, globalStep: Int) -> Double {
        switch self {
        case let .albef(base, warm, minLR, warmupEpochs, stepSize, epochs):
            if epoch == 0 {
                let k = iteration == 0 ? 0 : min((iteration - 1) / max(stepSize, 1), warmupEpochs)
                if k >= warmupEpochs { return base }
                return warm + Double(k) * (base - warm) / Double(max(warmupEpochs, 1))
            }
            return minLR + 0.5 * (base - minLR) * (1 + cos(Double.pi * Double(epoch) / Double(max(epochs, 1))))
        case let .cosinePerStep(base, minLR, warmupSteps, totalSteps):
            if globalStep < warmupSteps { return base * Double(globalStep + 1) / Double(warmupSteps) }
            let t = Double(globalStep - warmupSteps) / Double(max(totalSteps - warmupSteps, 1))
            return minLR + 0.5 * (base - minLR) * (1 + cos(Double.pi * min(t, 1)))
        case .constant(let v):
            return v
        }
    }
}

extension TrainConfig {
    /// The learning rate and α used by the optimizer step of (epoch, iteration).
    public func rates(epoch: Int, iteration: Int, globalStep: Int, iterationsPerEpoch: Int) -> (lr: Double, alpha: Float) {
        (schedule.lr(epoch: epoch, iteration: iteration, globalStep: globalStep),
         task == .retrieval && !retrieval.warmUp ? model.alpha
            : alphaRamp(alpha: model.alpha, epoch: epoch, iteration: iteration, iterationsPerEpoch: iterationsPerEpoch, rampEpochs: alphaRampEpochs))
    }
}

/// ALBEF's α ramp (spec §2.5): α·min(1, i/n) during the first `rampEpochs` epochs, counted in
/// iterations (`rampEpochs` = 1 is the reference; 2 is LAVIS's).
public func alphaRamp(alpha: Float, epoch: Int, iteration: Int, iterationsPerEpoch: Int, rampEpochs: Int = 1) -> Float {
    let n = max(iterationsPerEpoch, 1) * max(rampEpochs, 1)
    let i = epoch * max(iterationsPerEpoch, 1) + iteration
    return i >= n ? alpha : alpha * Float(i) / Float(n)
}
