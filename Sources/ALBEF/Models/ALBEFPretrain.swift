import NN
import Tensor

/// Random draws a test or a fixture may supply instead of sampling (spec §11: negatives and
/// MLM masks are injectable).
public struct StepInjection: Sendable {
    /// Negative image for text b (`itm_neg_image_idx`).
    public var negativeImageIndex: [Int]?
    /// Negative text for image b (`itm_neg_text_idx`).
    public var negativeTextIndex: [Int]?
    /// Masked input ids and labels (−100 where not masked).
    public var mlmInputIds: [Int32]?
    public var mlmLabels: [Int32]?
    public init(negativeImageIndex: [Int]? = nil, negativeTextIndex: [Int]? = nil, mlmInputIds: [Int32]? = nil, mlmLabels: [Int32]? = nil) {
        self.negativeImageIndex = negativeImageIndex
        self.negativeTextIndex = negativeTextIndex
        self.mlmInputIds = mlmInputIds
        self.mlmLabels = mlmLabels
    }
}

/// One pretraining batch: normalised images `[B, 3, H, W]`, token ids and attention mask `[B, L]`.
public struct PretrainBatch {
    public var images: Tensor
    public var inputIds: [Int32]
    public var attentionMask: [Int32]
    public var batchSize: Int
    public var length: Int
    /// The samples' numbers in the corpus (shard offset + index in file order; empty for
    /// synthetic batches): the audit trail of `--record-samples`.
    public var sampleIDs: [Int64] = []
    /// Each sample's image id (`re_train_dataset`'s `img_ids` numbering: captions of one image
    /// share it), read by retrieval fine-tuning; empty for pretraining corpora.
    public var imageIds: [Int64] = []
    public init(images: Tensor, inputIds: [Int32], attentionMask: [Int32], batchSize: Int, length: Int, sampleIDs: [Int64] = [],
                imageIds: [Int64] = []) {
        precondition(inputIds.count == batchSize * length && attentionMask.count == batchSize * length,
                     "PretrainBatch: ids/mask must be [\(batchSize), \(length)]")
        self.images = images
        self.inputIds = inputIds
        self.attentionMask = attentionMask
        self.batchSize = batchSize
        self.length = length
        self.sampleIDs = sampleIDs
        self.imageIds = imageIds
    }
}

/// The three losses (0-dim tensors on the tape) and, when requested, named intermediate values.
public struct StepOutput {
    public var lossITA: Tensor, lossITM: Tensor, lossMLM: Tensor
    public var total: Tensor
    public var diagnostics: [String: Float] = [:]
    public var activations: [String: Tensor] = [:]
    public var negativeImageIndex: [Int] = [], negativeTextIndex: [Int] = []
}

/// ALBEF's pretraining model (`models/model_pretrain.py`): online encoders and projections,
/// momentum copies, feature queues, ITC + ITM + MLM with momentum distillation.
///
/// Keys are exactly the reference state_dict's: `temp`, `image_queue`, `text_queue`,
/// `queue_ptr`, `visual_encoder.*`, `text_encoder.*`, `vision_proj.*`, `text_proj.*`,
/// `itm_head.*` and the `_m` copies.
public final class ALBEFPretrain: Module, ALBEFEncoders {
    public let config: ALBEFModelConfig
    public let visualEncoder: VisionTransformer
    public let textEncoder: BertForMaskedLM
    public let visionProj: Linear, textProj: Linear, itmHead: Linear
    public let temp: Tensor
    public let visualEncoderM: VisionTransformer
    public let textEncoderM: BertForMaskedLM
    public let visionProjM: Linear, textProjM: Linear
    public let imageQueue: Tensor, textQueue: Tensor
    public let queuePtr: IntBuffer
    /// Dropout randomness of the online and momentum BERTs.
    public let dropoutRandom: SharedRandom

    /// Flat buffers (after `pack()`): online trainables, and the momentum copies in the same
    /// layout as the online prefix `momentumPairs` so the EMA is one saxpby.
    public private(set) var online: FlatParameters?
    public private(set) var momentum: FlatParameters?
    /// Gathered momentum features of the current step, written by `commitEnqueue()`.
    public var pendingEnqueue: (Tensor, Tensor)?

    public init(_ c: ALBEFModelConfig, seed: UInt64 = 42) {
        config = c
        dropoutRandom = SharedRandom(RandomGenerator(seed: seed).split(0xD0))
        func vit() -> VisionTransformer {
            VisionTransformer(imageSize: c.imageRes, patchSize: c.patchSize, width: c.visionWidth, depth: c.vitDepth,
                              heads: c.vitHeads, mlpRatio: c.vitMlpRatio)
        }
        visualEncoder = vit()
        textEncoder = BertForMaskedLM(c.bert, random: dropoutRandom)
        visionProj = Linear(c.visionWidth, c.embedDim)
        textProj = Linear(c.bert.hiddenSize, c.embedDim)
        itmHead = Linear(c.bert.hiddenSize, 2)
        temp = Tensor(scalar: c.temp, requiresGrad: true)
        visualEncoderM = vit()
        textEncoderM = BertForMaskedLM(c.bert, random: dropoutRandom)
        visionProjM = Linear(c.visionWidth, c.embedDim)
        textProjM = Linear(c.bert.hiddenSize, c.embedDim)
        imageQueue = Tensor(zeros: [c.embedDim, c.queueSize])
        textQueue = Tensor(zeros: [c.embedDim, c.queueSize])
        queuePtr = IntBuffer(IntTensor([0], shape: [1]))
        super.init()
        var rng = RandomGenerator(seed: seed)
        visualEncoder.initialize(rng: &rng)
        textEncoder.initialize(rng: &rng)
        visionProj.initDefault(rng: &rng)
        textProj.initDefault(rng: &rng)
        itmHead.initDefault(rng: &rng)
        for q in [imageQueue, textQueue] {
            for i in 0..<q.count { q.data[i] = rng.normal() }
            FeatureQueue.normalizeColumns(q)
        }
        copyOnlineToMomentum()
        for (_, t) in momentumModules.flatMap({ $0.1.namedParameters() }) { t.requiresGrad = false }
    }

    public override var localParameters: [(String, Tensor)] { [("temp", temp)] }
    public override var localBuffers: [(String, StateEntry)] {
        [("image_queue", .float(imageQueue)), ("text_queue", .float(textQueue)), ("queue_ptr", .int(queuePtr))]
    }
    public override var children: [(String, Module)] {
        [("visual_encoder", visualEncoder), ("text_encoder", textEncoder), ("vision_proj", visionProj),
         ("text_proj", textProj), ("itm_head", itmHead)] + momentumModules
    }
    var momentumModules: [(String, Module)] {
        [("visual_encoder_m", visualEncoderM), ("vision_proj_m", visionProjM), ("text_encoder_m", textEncoderM),
         ("text_proj_m", textProjM)]
    }
    /// (online, momentum, name) module pairs in the reference's `model_pairs` order.
    public var momentumPairs: [(online: Module, momentum: Module, name: String)] {
        [(visualEncoder, visualEncoderM, "visual_encoder"), (visionProj, visionProjM, "vision_proj"),
         (textEncoder, textEncoderM, "text_encoder"), (textProj, textProjM, "text_proj")]
    }
    public var textBert: BertModel { textEncoder.bert }
    public var textBertM: BertModel { textEncoderM.bert }
    public var momentumCoefficient: Float { config.momentum }

    /// Packs parameters, gradients and momentum weights into flat buffers (once, after construction):
    /// online trainables in `trainableParameters()` order, the momentum copies in the same
    /// layout as the online prefix so the EMA is one saxpby.
    /// `gradients: .deferred` leaves the gradient buffers to an optimizer-in-backward driver.
    public func pack(gradients layout: FlatParameters.GradientLayout = .flat) {
        guard online == nil else { return }
        let packed = makePackedBuffers(gradients: layout)
        online = packed.online
        momentum = packed.momentum
    }

    /// Applies the enqueue recorded by the last `forwardStep` (call after its backward).
    public func commitEnqueue() {
        guard let (i, t) = pendingEnqueue else { return }
        pendingEnqueue = nil
        enqueue(imageFeatures: i, textFeatures: t)
    }

    /// Writes gathered features `[G, E]` into queue columns [ptr, ptr+G) and advances ptr mod Q.
    public func enqueue(imageFeatures: Tensor, textFeatures: Tensor) {
        let g = imageFeatures.shape[0], q = config.queueSize
        let ptr = Int(queuePtr.value.values[0])
        let next = FeatureQueue.advance(ptr, by: g, size: q)
        FeatureQueue.writeColumns(imageFeatures, into: imageQueue, at: ptr)
        FeatureQueue.writeColumns(textFeatures, into: textQueue, at: ptr)
        queuePtr.value = IntTensor([Int64(next)], shape: [1])
    }
}
