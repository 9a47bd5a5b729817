import Foundation
import NN
import Tensor

/// ALBEF's image–text retrieval model (`models/model_retrieval.py`, the `ALBEF` class that
/// `Retrieval.py` fine-tunes and evaluates): the pretraining encoders without the MLM head,
/// ITC whose positives are every pair sharing an image id (in the batch and in an `idx_queue`),
/// momentum distillation, and ITM on hard negatives that skip every caption of the same image.
///
/// Keys are exactly the reference state_dict's: `temp`, `image_queue`, `text_queue`
/// `[E, Q]`, `idx_queue` `[1, Q]` (int64, −100 = never written), `queue_ptr` `[1]`,
/// `visual_encoder.*`, `text_encoder.*` (an xbert `BertModel`: `text_encoder.embeddings.*`,
/// `text_encoder.encoder.layer.i.*`, no `bert.` level and no `cls.*`), `vision_proj.*`,
/// `text_proj.*`, `itm_head.*`, and the momentum copies `visual_encoder_m`, `vision_proj_m`,
/// `text_encoder_m`, `text_proj_m`. Unlike pretraining, `temp` is not clamped.
public final class ALBEFRetrieval: Module, ALBEFEncoders {
    public let config: ALBEFModelConfig
    /// `config['distill']`: momentum-distilled ITC targets (else the id targets alone).
    public let distill: Bool
    public let visualEncoder: VisionTransformer
    public let textEncoder: BertModel
    public let visionProj: Linear, textProj: Linear, itmHead: Linear
    public let temp: Tensor
    public let visualEncoderM: VisionTransformer
    public let textEncoderM: BertModel
    public let visionProjM: Linear, textProjM: Linear
    public let imageQueue: Tensor, textQueue: Tensor
    /// Image ids of the queued features `[1, Q]`.
    public let idxQueue: IntBuffer
    public let queuePtr: IntBuffer
    /// Dropout randomness of the online and momentum BERTs.
    public let dropoutRandom: SharedRandom

    /// Flat buffers (after `pack()`), as `ALBEFPretrain`'s.
    public private(set) var online: FlatParameters?
    public private(set) var momentum: FlatParameters?
    /// Gathered momentum features `[G, E]` and image ids `[G]` of the current step, written by `commitEnqueue()`.
    public var pendingEnqueue: (image: Tensor, text: Tensor, ids: [Int64])?

    /// Builds the model with ALBEF's random init for `seed` (ViT trunc-normal, BERT
    /// N(0, initializer_range), default Linear init, unit random queue columns, `idx_queue`
    /// all −100, pointer 0; momentum = online).
    public init(_ c: ALBEFModelConfig, distill: Bool = true, seed: UInt64 = 42) {
        config = c
        self.distill = distill
        dropoutRandom = SharedRandom(RandomGenerator(seed: seed).split(0xD0))
        func vit() -> VisionTransformer {
            VisionTransformer(imageSize: c.imageRes, patchSize: c.patchSize, width: c.visionWidth, depth: c.vitDepth,
                              heads: c.vitHeads, mlpRatio: c.vitMlpRatio)
        }
        visualEncoder = vit()
        textEncoder = BertModel(c.bert, random: dropoutRandom)
        visionProj = Linear(c.visionWidth, c.embedDim)
        textProj = Linear(c.bert.hiddenSize, c.embedDim)
        itmHead = Linear(c.bert.hiddenSize, 2)
        temp = Tensor(scalar: c.temp, requiresGrad: true)
        visualEncoderM = vit()
        textEncoderM = BertModel(c.bert, random: dropoutRandom)
        visionProjM = Linear(c.visionWidth, c.embedDim)
        textProjM = Linear(c.bert.hiddenSize, c.embedDim)
        imageQueue = Tensor(zeros: [c.embedDim, c.queueSize])
        textQueue = Tensor(zeros: [c.embedDim, c.queueSize])
        idxQueue = IntBuffer(IntTensor([Int64](repeating: -100, count: c.queueSize), shape: [1, c.queueSize]))
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
        for (_, m, _) in momentumPairs { for (_, t) in m.namedParameters() { t.requiresGrad = false } }
    }

    public override var localParameters: [(String, Tensor)] { [("temp", temp)] }
    public override var localBuffers: [(String, StateEntry)] {
        [("image_queue", .float(imageQueue)), ("text_queue", .float(textQueue)), ("idx_queue", .int(idxQueue)),
         ("queue_ptr", .int(queuePtr))]
    }
    public override var children: [(String, Module)] {
        [("visual_encoder", visualEncoder), ("text_encoder", textEncoder), ("vision_proj", visionProj),
         ("text_proj", textProj), ("itm_head", itmHead), ("visual_encoder_m", visualEncoderM),
         ("vision_proj_m", visionProjM), ("text_encoder_m", textEncoderM), ("text_proj_m", textProjM)]
    }
    /// (online, momentum, name) in the reference's `model_pairs` order.
    public var momentumPairs: [(online: Module, momentum: Module, name: String)] {
        [(visualEncoder, visualEncoderM, "visual_encoder"), (visionProj, visionProjM, "vision_proj"),
         (textEncoder, textEncoderM, "text_encoder"), (textProj, textProjM, "text_proj")]
    }
    public var textBert: BertModel { textEncoder }
    public var textBertM: BertModel { textEncoderM }
    public var momentumCoefficient: Float { config.momentum }

    /// Packs the online trainables (`trainableParameters()` order: paired modules, `itm_head`,
    /// `temp`) and the momentum copies into flat buffers, once.
    public func pack(gradients layout: FlatParameters.GradientLayout = .flat) {
        guard online == nil else { return }
        let packed = makePackedBuffers(gradients: layout)
        online = packed.online
        momentum = packed.momentum
    }

    /// Applies the enqueue recorded by the last `forwardStep` (call after its backward).
    public func commitEnqueue() {
        guard let p = pendingEnqueue else { return }
        pendingEnqueue = nil
        enqueue(imageFeatures: p.image, textFeatures: p.text, ids: p.ids)
    }

    /// `_dequeue_and_enqueue`: gathered features `[G, E]` and ids `[G]` into the columns
    /// [ptr, ptr + G) of `image_queue`, `text_queue`, `idx_queue`; ptr ← (ptr + G) mod Q.
    public func enqueue(imageFeatures: Tensor, textFeatures: Tensor, ids: [Int64]) {
        let g = imageFeatures.shape[0], q = config.queueSize
        precondition(ids.count == g, "enqueue: \(ids.count) ids for \(g) features")
        let ptr = Int(queuePtr.value.values[0])
        let next = FeatureQueue.advance(ptr, by: g, size: q)
        FeatureQueue.writeColumns(imageFeatures, into: imageQueue, at: ptr)
        FeatureQueue.writeColumns(textFeatures, into: textQueue, at: ptr)
        FeatureQueue.writeColumns(ids, into: idxQueue, at: ptr)
        queuePtr.value = IntTensor([Int64(next)], shape: [1])
    }

    /// Loads a pretraining checkpoint (`ALBEFPretrain`'s state dict: a reference `.pth` with
    /// `model`, or one of our checkpoint directories / `model.safetensors`) the way
    /// `Retrieval.py` does: `visual_encoder(_m).pos_embed` interpolated to this `image_res`,
    /// `text_encoder(_m).bert.X` read as `text_encoder(_m).X` (`key.replace('bert.', '')`),
    /// the MLM head `cls.*` dropped, `strict=False` (a retrieval checkpoint, with `idx_queue`,
    /// loads as it is). A mis-shaped key is an error naming the file.
    @discardableResult
    public func loadPretrainedCheckpoint(_ path: String) throws -> LoadReport {
        var isDir: ObjCBool = false
        let p = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
            ? URL(fileURLWithPath: path).appendingPathComponent("model.safetensors").path : path
        let file = try openWeightFile(p)
        let keys = Set(file.keys)
        var r = try loadInterpolatingPosEmbed(file, strict: false, keyMap: { k in
            guard !keys.contains(k) else { return k }
            for prefix in ["text_encoder_m.", "text_encoder."] where k.hasPrefix(prefix) {
                return prefix + "bert." + k.dropFirst(prefix.count)
            }
            return k
        })
        if let bad = r.shapeMismatches.first {
            throw CheckpointError.shapeMismatch(key: bad.key, expected: bad.expected, got: bad.got, path: file.path)
        }
        r.unexpected.removeAll { $0.hasPrefix("text_encoder.cls.") || $0.hasPrefix("text_encoder_m.cls.") }
        return r
    }
}
