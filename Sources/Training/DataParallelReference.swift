import ALBEF
import NN
import Tensor

/// A single process that computes what `worldSize` data-parallel ranks compute together: each
/// rank's local forward/backward with that rank's random streams (the same streams `Trainer`
/// derives), gradients averaged, one AdamW step, the queue filled with the rank-ordered
/// concatenation of every rank's momentum features. Used to check the distributed trainer.
public final class DataParallelReference {
    public let config: TrainConfig
    public let worldSize: Int
    public let model: ALBEFPretrain
    public let optimizer: AdamW
    var rngs: [RandomGenerator]
    var dropout: [RandomGenerator]
    public private(set) var globalStep = 0
    /// Momentum features `[B, E]` of each rank in the last step (image, text).
    public private(set) var lastFeatures: [(Tensor, Tensor)] = []

    public init(config: TrainConfig, worldSize: Int, seed: UInt64) throws {
        self.config = config
        self.worldSize = worldSize
        model = ALBEFPretrain(config.model, seed: seed)
        _ = try model.loadInitialWeights(config) { _ in }
        model.pack()
        optimizer = AdamW(model.online!, lr: Float(config.lr), weightDecay: Float(config.weightDecay))
        rngs = (0..<worldSize).map { RankStreams.step(seed: seed, rank: $0) }
        dropout = (0..<worldSize).map { RankStreams.dropout(seed: seed, rank: $0) }
    }

    /// One global step over every rank's local batch.
    public func step(_ batches: [PretrainBatch], epoch: Int, iteration: Int, iterationsPerEpoch: Int) {
        precondition(batches.count == worldSize)
        let on = model.online!, mo = model.momentum!
        let (lr, alpha) = config.rates(epoch: epoch, iteration: iteration, globalStep: globalStep, iterationsPerEpoch: iterationsPerEpoch)
        optimizer.lr = Float(lr)
        let momentumBefore = Array(UnsafeBufferPointer(start: mo.values.pointer, count: mo.count))
        let iq = model.imageQueue.scalars, tq = model.textQueue.scalars
        let ptr = model.queuePtr.value
        var gradSum = [Float](repeating: 0, count: on.count)
        lastFeatures = []
        for r in 0..<worldSize {
            momentumBefore.withUnsafeBufferPointer { mo.values.pointer.update(from: $0.baseAddress!, count: mo.count) }
            iq.withUnsafeBufferPointer { model.imageQueue.data.update(from: $0.baseAddress!, count: iq.count) }
            tq.withUnsafeBufferPointer { model.textQueue.data.update(from: $0.baseAddress!, count: tq.count) }
            model.queuePtr.value = ptr
            model.dropoutRandom.generator = dropout[r]
            on.zeroGradients()
            var captured: [Tensor] = []
            let out = model.forwardStep(batches[r], alpha: alpha, rng: &rngs[r],
                                        allGather: { t in captured.append(t.detachedCopy()); return Tensor.concat(Array(repeating: t, count: self.worldSize)) })
            out.total.backward()
            model.pendingEnqueue = nil
            dropout[r] = model.dropoutRandom.generator
            lastFeatures.append((captured[0], captured[1]))
            let g = on.gradients!.pointer
            for i in 0..<on.count { gradSum[i] += g[i] }
        }
        let g = on.gradients!.pointer
        let inv = 1 / Float(worldSize)
        for i in 0..<on.count { g[i] = gradSum[i] * inv }
        optimizer.update()
        // Queue: the real rank-ordered concatenation at the old pointer.
        iq.withUnsafeBufferPointer { model.imageQueue.data.update(from: $0.baseAddress!, count: iq.count) }
        tq.withUnsafeBufferPointer { model.textQueue.data.update(from: $0.baseAddress!, count: tq.count) }
        model.queuePtr.value = ptr
        model.enqueue(imageFeatures: Tensor.concat(lastFeatures.map(\.0)), textFeatures: Tensor.concat(lastFeatures.map(\.1)))
        globalStep += 1
    }
}
