import ALBEF
import Tensor

/// Deterministic random batches (normal images, random token ids with varied lengths) as a
/// function of (seed, rank, step): for tests, benchmarks and the MPI selftest.
public struct SyntheticBatches: Sendable {
    public var batchSize: Int, length: Int, imageRes: Int, vocabSize: Int
    public var seed: UInt64

    public init(batchSize: Int, length: Int, imageRes: Int, vocabSize: Int, seed: UInt64) {
        self.batchSize = batchSize; self.length = length; self.imageRes = imageRes; self.vocabSize = vocabSize; self.seed = seed
    }

    public func batch(rank: Int, step: Int) -> PretrainBatch {
        var rng = RandomGenerator(seed: seed).split(UInt64(rank) << 32 | UInt64(step))
        let n = batchSize * 3 * imageRes * imageRes
        let img = Tensor((0..<n).map { _ in rng.normal() }, shape: [batchSize, 3, imageRes, imageRes])
        var ids = [Int32](), mask = [Int32]()
        for r in 0..<batchSize {
            let len = r == 0 ? length : max(2, length - rng.int(below: max(length / 2, 1)))
            for t in 0..<length {
                // Word ids from 1000 up (past BERT's special tokens); from 104 for vocabularies of ≤ 1000.
                let lo = vocabSize > 1000 ? 1000 : 104
                ids.append(t == 0 ? 101 : (t < len ? Int32(rng.int(lo, max(vocabSize, lo + 1))) : 0))
                mask.append(t < len ? 1 : 0)
            }
        }
        // Image ids for retrieval fine-tuning: distinct within the batch, shared across ranks and
        // steps (id = (rank·B + b + 3·step) mod 4B), so the idx queue holds positives of later
        // batches. No random draw: the pretraining batches are unchanged.
        let imageIds = (0..<batchSize).map { Int64((rank * batchSize + $0 + 3 * step) % (4 * batchSize)) }
        return PretrainBatch(images: img, inputIds: ids, attentionMask: mask, batchSize: batchSize, length: length, imageIds: imageIds)
    }
}

extension TrainConfig {
    /// A very small model for tests (ViT 32×2 on 32 px, BERT 32×4 with fusion at 2, vocab 1200).
    public static func testMicro(batchSize: Int = 4, queueSize: Int = 32, dropout: Float = 0) -> TrainConfig {
        var c = TrainConfig()
        c.model.imageRes = 32; c.model.patchSize = 16; c.model.visionWidth = 32; c.model.vitDepth = 2; c.model.vitHeads = 2
        c.model.embedDim = 16; c.model.queueSize = queueSize
        c.model.bert = BertConfig(hiddenSize: 32, numHiddenLayers: 4, numAttentionHeads: 2, intermediateSize: 64,
                                  hiddenDropoutProb: dropout, attentionProbsDropoutProb: 0, vocabSize: 1200, fusionLayer: 2, encoderWidth: 32)
        c.batchSize = batchSize
        c.lr = 1e-3
        c.schedule = .constant(1e-3)
        return c
    }
}
