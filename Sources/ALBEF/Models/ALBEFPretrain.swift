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
    public init(images: Tensor, inputIds: [Int32], attentionMask: [Int32], batchSize: Int, length: Int, sampleIDs: [Int64] = []) {
        precondition(inputIds.count == batchSize * length && attentionMask.count == batchSize * length,
                     "PretrainBatch: ids/mask must be [\(batchSize), \(length)]")
        self.images = images
        self.inputIds = inputIds
        self.attentionMask = attentionMask
        self.batchSize = batchSize
        self.length = length
        self.sampleIDs = sampleIDs
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
public final class ALBEFPretrain: Module {
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
            normalizeColumns(q)
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
    /// (online, momentum) module pairs in the reference's `model_pairs` order.
    var pairs: [(Module, Module, String)] {
        [(visualEncoder, visualEncoderM, "visual_encoder"), (visionProj, visionProjM, "vision_proj"),
         (textEncoder, textEncoderM, "text_encoder"), (textProj, textProjM, "text_proj")]
    }

    /// Online trainables: the momentum-paired ones first (pair order), then `itm_head`, `temp`.
    public func trainableParameters() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        for (o, _, name) in pairs { out += o.uniqueParameters().map { (name + "." + $0.0, $0.1) } }
        out += itmHead.uniqueParameters().map { ("itm_head." + $0.0, $0.1) }
        out.append(("temp", temp))
        return out
    }

    /// Momentum parameters in the same order as the paired prefix of `trainableParameters()`.
    public func momentumParameters() -> [(String, Tensor)] {
        pairs.flatMap { _, m, name in m.uniqueParameters().map { (name + "_m." + $0.0, $0.1) } }
    }

    /// Packs parameters, gradients and momentum weights into flat buffers (once, after construction).
    /// `gradients: .deferred` leaves the gradient buffers to an optimizer-in-backward driver.
    public func pack(gradients layout: FlatParameters.GradientLayout = .flat) {
        guard online == nil else { return }
        online = FlatParameters(trainableParameters(), gradients: layout)
        momentum = FlatParameters(momentumParameters(), withGradients: false)
        BufferPool.shared.trim()  // the pre-packing copies are garbage now
        precondition(online!.segments.prefix(momentum!.segments.count).map(\.shape) == momentum!.segments.map(\.shape),
                     "ALBEFPretrain.pack: momentum layout differs from the online prefix")
    }

    /// Exact copy of every online paired parameter into its momentum partner (`copy_params`).
    public func copyOnlineToMomentum() {
        for (o, m, _) in pairs {
            for ((_, a), (_, b)) in zip(o.uniqueParameters(), m.uniqueParameters()) { b.data.update(from: a.data, count: a.count) }
        }
    }

    /// θ_m ← m·θ_m + (1 − m)·θ over every pair: one saxpby on the packed buffers.
    public func momentumUpdate() {
        let m = config.momentum
        let w = Float(1 - Double(m))
        if let on = online, let mo = momentum {
            saxpby(mo.count, alpha: w, x: on.values.pointer, beta: m, y: mo.values.pointer)
        } else {
            for (o, mm, _) in pairs {
                for ((_, a), (_, b)) in zip(o.uniqueParameters(), mm.uniqueParameters()) {
                    saxpby(a.count, alpha: w, x: a.data, beta: m, y: b.data)
                }
            }
        }
    }

    /// Makes every column of a `[E, Q]` queue a unit vector (`F.normalize(q, dim=0)`).
    func normalizeColumns(_ q: Tensor) {
        let e = q.shape[0], n = q.shape[1]
        for j in 0..<n {
            var s: Float = 0
            for i in 0..<e { let v = q.data[i * n + j]; s += v * v }
            let nrm = max(s.squareRoot(), 1e-12)
            for i in 0..<e { q.data[i * n + j] /= nrm }
        }
    }

    /// Applies the enqueue recorded by the last `forwardStep` (call after its backward).
    public func commitEnqueue() {
        guard let (i, t) = pendingEnqueue else { return }
        pendingEnqueue = nil
        enqueue(imageFeatures: i, textFeatures: t)
    }

    /// Writes gathered features `[G, E]` into queue columns [ptr, ptr+G) and advances ptr mod Q.
    public func enqueue(imageFeatures: Tensor, textFeatures: Tensor) {
        let g = imageFeatures.shape[0], e = config.embedDim, q = config.queueSize
        let ptr = Int(queuePtr.value.values[0])
        precondition(q % g == 0, "enqueue: queue_size \(q) is not divisible by the global batch \(g)")
        for (feat, queue) in [(imageFeatures, imageQueue), (textFeatures, textQueue)] {
            for b in 0..<g { for i in 0..<e { queue.data[i * q + ptr + b] = feat.data[b * e + i] } }
        }
        queuePtr.value = IntTensor([Int64((ptr + g) % q)], shape: [1])
    }
}
