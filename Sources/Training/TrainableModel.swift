import ALBEF
import Foundation
import NN
import Tensor

/// The losses of one forward step as `ModelTrainer` needs them: the total on the tape (its
/// backward is the step's gradient) and the parts it logs (`loss_ita`, `loss_itm`, `loss_mlm`;
/// a model without MLM reports 0).
public struct TrainingLosses {
    public var total: Tensor
    public var ita: Float, itm: Float, mlm: Float
    public init(total: Tensor, ita: Float, itm: Float, mlm: Float) {
        self.total = total
        self.ita = ita
        self.itm = itm
        self.mlm = mlm
    }
}

/// The gathered momentum features (`[G, E]` each) and image ids (`[G]`, empty for pretraining)
/// of one forward step, waiting for `_dequeue_and_enqueue`.
public struct PendingFeatures {
    public var image: Tensor, text: Tensor
    public var ids: [Int64]
    public init(image: Tensor, text: Tensor, ids: [Int64] = []) {
        self.image = image
        self.text = text
        self.ids = ids
    }
}

/// An ALBEF model `ModelTrainer` can train data-parallel, checkpoint and resume: the
/// pretraining model (`model_pretrain.py`, ITA + ITM + MLM) and the retrieval model
/// (`model_retrieval.py`, ITA with image-id positives + ITM). What the trainer touches is the
/// same for both: the online / momentum `FlatParameters` (broadcast, checksummed, stepped by
/// AdamW), the feature queues and pointer (broadcast, checksummed, checkpointed with the state
/// dict), and — retrieval only — the `idx_queue` of image ids.
public protocol TrainableALBEF: Module, ALBEFEncoders {
    var online: FlatParameters? { get }
    var momentum: FlatParameters? { get }
    var imageQueue: Tensor { get }
    var textQueue: Tensor { get }
    var queuePtr: IntBuffer { get }
    var temp: Tensor { get }
    var dropoutRandom: SharedRandom { get }
    /// `idx_queue` `[1, Q]` (int64) of the retrieval model; nil when the model has none.
    var imageIDQueue: IntBuffer? { get }
    /// The `format` metadata of the checkpoint's `model.safetensors`.
    static var checkpointFormat: String { get }
    /// The model of `config` with ALBEF's random init for `seed`.
    static func build(_ config: TrainConfig, seed: UInt64) -> Self
    func pack(gradients layout: FlatParameters.GradientLayout)
    /// Applies the config's starting weights; returns the online parameters `pretrained_lr_mult` scales.
    func loadInitialWeights(_ config: TrainConfig, log: (String) -> Void) throws -> Set<ObjectIdentifier>
    /// One forward of the model's training objective on this rank's `batch`; the momentum
    /// encoders are updated first when `updateMomentum`. The gathered features to enqueue are left
    /// pending (`commitEnqueue()` / `takePendingEnqueue()` after backward).
    func trainingForward(_ batch: PretrainBatch, alpha: Float, rng: inout RandomGenerator, injection: StepInjection,
                         updateMomentum: Bool, allGather: (Tensor) -> Tensor, allGatherIds: ([Int64]) -> [Int64]) -> TrainingLosses
    /// Applies the pending enqueue of the last forward.
    func commitEnqueue()
    /// Removes and returns the pending enqueue of the last forward (accumulation enqueues every
    /// micro-step's features at once, in slot order, through `enqueue(_:)`).
    func takePendingEnqueue() -> PendingFeatures?
    /// `_dequeue_and_enqueue` of several micro-steps' gathered features, concatenated in order.
    func enqueue(_ parts: [PendingFeatures])
}

extension ALBEFPretrain: TrainableALBEF {
    public var imageIDQueue: IntBuffer? { nil }
    public static var checkpointFormat: String { "albef-pretrain" }
    public static func build(_ config: TrainConfig, seed: UInt64) -> ALBEFPretrain { ALBEFPretrain(config.model, seed: seed) }

    public func trainingForward(_ batch: PretrainBatch, alpha: Float, rng: inout RandomGenerator, injection: StepInjection,
                                updateMomentum: Bool, allGather: (Tensor) -> Tensor, allGatherIds: ([Int64]) -> [Int64]) -> TrainingLosses {
        let out = forwardStep(batch, alpha: alpha, rng: &rng, injection: injection, updateMomentum: updateMomentum, allGather: allGather)
        return TrainingLosses(total: out.total, ita: out.lossITA.item, itm: out.lossITM.item, mlm: out.lossMLM.item)
    }

    public func takePendingEnqueue() -> PendingFeatures? {
        defer { pendingEnqueue = nil }
        return pendingEnqueue.map { PendingFeatures(image: $0.0, text: $0.1) }
    }

    public func enqueue(_ parts: [PendingFeatures]) {
        enqueue(imageFeatures: Tensor.concat(parts.map(\.image)), textFeatures: Tensor.concat(parts.map(\.text)))
    }
}

extension ALBEFRetrieval: TrainableALBEF {
    public var imageIDQueue: IntBuffer? { idxQueue }
    public static var checkpointFormat: String { "albef-retrieval" }
    /// `distill` from the config (`Retrieval.yaml`'s key, default true).
    public static func build(_ config: TrainConfig, seed: UInt64) -> ALBEFRetrieval {
        ALBEFRetrieval(config.model, distill: config.retrieval.distill, seed: seed)
    }

    /// `Retrieval.py`'s starting weights: `checkpoint` read as a pretraining (or retrieval)
    /// checkpoint (`loadPretrainedCheckpoint`: pos-embed interpolated, `bert.` dropped, MLM head
    /// dropped, strict=False). No weights are scaled by `pretrained_lr_mult` (empty set).
    public func loadInitialWeights(_ config: TrainConfig, log: (String) -> Void) throws -> Set<ObjectIdentifier> {
        if config.textInit != nil || config.visionInit != nil {
            log("note: text_init / vision_init are not read for retrieval fine-tuning (Retrieval.py starts from checkpoint)")
        }
        if let c = config.checkpoint {
            let r = try loadPretrainedCheckpoint(c)
            log("checkpoint \(c): \(r.summary)")
        }
        return []
    }

    /// The batch's `imageIds` are the `idx` of `model_retrieval.py` (every rank's batch must carry them).
    public func trainingForward(_ batch: PretrainBatch, alpha: Float, rng: inout RandomGenerator, injection: StepInjection,
                                updateMomentum: Bool, allGather: (Tensor) -> Tensor, allGatherIds: ([Int64]) -> [Int64]) -> TrainingLosses {
        precondition(batch.imageIds.count == batch.batchSize,
                     "retrieval fine-tuning: the batch carries \(batch.imageIds.count) image ids for \(batch.batchSize) samples (the corpus needs image_id on every entry)")
        let rb = RetrievalBatch(images: batch.images, inputIds: batch.inputIds, attentionMask: batch.attentionMask, imageIds: batch.imageIds,
                                batchSize: batch.batchSize, length: batch.length)
        let out = forwardStep(rb, alpha: Double(alpha), rng: &rng, injection: injection, updateMomentum: updateMomentum,
                              allGather: allGather, allGatherIds: allGatherIds)
        return TrainingLosses(total: out.total, ita: out.lossITA.item, itm: out.lossITM.item, mlm: 0)
    }

    public func takePendingEnqueue() -> PendingFeatures? {
        defer { pendingEnqueue = nil }
        return pendingEnqueue.map { PendingFeatures(image: $0.image, text: $0.text, ids: $0.ids) }
    }

    public func enqueue(_ parts: [PendingFeatures]) {
        enqueue(imageFeatures: Tensor.concat(parts.map(\.image)), textFeatures: Tensor.concat(parts.map(\.text)),
                ids: parts.flatMap(\.ids))
    }
}
