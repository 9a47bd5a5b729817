import ALBEF
import Foundation
import Tensor
import Yams

/// A training configuration in ALBEF's `Pretrain.yaml` format. ALBEF's keys are read as they
/// are (`image_res`, `vision_width`, `embed_dim`, `batch_size`, `temp`, `mlm_probability`,
/// `queue_size`, `momentum`, `alpha`, `bert_config`, `optimizer`, `schedular`, `train_file`);
/// our additions have their own keys (`vit`, `max_length`, `text_init`, `schedule`, ...).
/// A wrong type or a missing required key is reported by name and file.
public struct TrainConfig: Sendable {
    public var model = ALBEFModelConfig()
    public var batchSize = 64
    /// Micro-steps per optimizer step (gradient accumulation; key `accum_steps`, `--accum-steps`):
    /// the global batch of a step is `batch_size × ranks × accum_steps`. See ``StepLayout``.
    public var accumSteps = 1
    /// Gradient buckets reduced in bf16 (key `grad_reduce: bf16`; default `fp32`): half the bytes
    /// on the wire; master weights and AdamW stay float32 (see `BF16` in Distributed).
    public var gradReduceBF16 = false
    /// Gradient buckets reduced on a communication thread while backward continues (key
    /// `grad_overlap: thread`), or on the training thread as each becomes final (`off`). Same bits
    /// either way. See ``ReductionThread``.
    public var gradOverlap = false
    /// Gradient buckets summed within each host first, then across hosts by one rank per host,
    /// then broadcast within the host (key `grad_topology: hierarchical`; default `flat`: one
    /// allreduce over all ranks). See `MPICommunicator.hierarchical`.
    public var gradHierarchical = false
    /// Target size of a gradient bucket in MB (key `grad_bucket_mb`, PyTorch DDP's
    /// `bucket_cap_mb`; default 16): smaller buckets start reducing earlier in backward.
    public var gradBucketMB = 16.0
    public var maxLength = 25
    public var trainFiles: [String] = []
    public var lr = 1e-4
    public var weightDecay = 0.02
    /// Apply AdamW bucket by bucket as backward finishes each gradient bucket, keeping no flat
    /// gradient buffer (YAML `optimizer: {in_backward: false}` turns it off; false: one flat buffer and one
    /// AdamW pass after backward — same numbers, more memory).
    public var optimizerInBackward = true
    /// Learning-rate multiplier for the weights loaded from `text_init` (YAML
    /// `optimizer: {pretrained_lr_mult: 0.1}`; default 1: ALBEF's single rate). Weights trained
    /// from scratch (ViT, cross-attention, heads) use the schedule's rate.
    public var pretrainedLRMult = 1.0
    public var schedule = LRSchedule.albef(baseLR: 1e-4, warmupLR: 1e-5, minLR: 1e-5, warmupEpochs: 20, stepSize: 100, epochs: 30)
    public var epochs = 30
    public var alphaRampEpochs = 1
    /// Augmentation (ALBEF: RandomResizedCrop scale (0.2, 1), horizontal flip, RandAugment(2, 7));
    /// key `augment: {crop_scale: [lo, hi], flip: bool, randaugment: bool}`.
    public var cropScale = (0.2, 1.0)
    public var flip = true
    public var randAugment = true
    /// Swap "left"/"right" in the caption of a flipped image (not ALBEF; for position-naming corpora).
    public var flipSwapsLeftRight = false
    /// WordPiece vocabulary (`vocab.txt`, uncased BERT); key `vocab`, default `configs/vocab.txt`.
    public var vocab: String?
    /// A plain BERT safetensors file (e.g. MiniLM) that initialises `text_encoder.bert` (+ `_m`).
    public var textInit: String?
    /// timm/DeiT ViT weights (`.pth` or safetensors) for `visual_encoder` (ALBEF's `init_deit`);
    /// key `vision_init`, relative to the YAML file.
    public var visionInit: String?
    /// A whole ALBEF checkpoint to start from (reference `.pth` or ours); key `checkpoint`.
    public var checkpoint: String?
    /// Images whose header says more pixels than this are skipped as bad samples before any
    /// pixel memory is allocated (a decompression bomb cannot take a loader down); key
    /// `max_image_pixels`, default Pillow's `MAX_IMAGE_PIXELS` (89 478 485 = 1024·1024·1024/4/3).
    public var maxImagePixels = 89_478_485
    /// A run aborts once more than this fraction of the samples read were bad; key `max_bad_fraction`.
    public var maxBadFraction = 0.1
    /// GEMM arithmetic (key `precision: fp32 | bf16`, flag `--precision`; default fp32). bf16 runs
    /// the linear layers, attention matmuls and their backward on bf16 operands with fp32
    /// accumulation (see `Precision`); everything else stays fp32.
    public var precision: Precision = .fp32
    /// In bf16 mode, the modules whose linear layers compute their weight gradient in fp32 (key
    /// `bf16_fp32_weight_grads`: state_dict module names or prefixes; `[]` is autocast's policy,
    /// every GEMM of the backward in bf16). The default keeps the text side's weight gradients
    /// fp32: with them in bf16 the quickstart's loss falls behind fp32's after step 300 (README,
    /// "bf16 mixed precision"). Entries that name no parameter of the model are an error when set
    /// in the file; the default's entries apply where the model has them.
    public var bf16FP32WeightGrads = TrainConfig.defaultBF16FP32WeightGrads
    public static let defaultBF16FP32WeightGrads = ["text_encoder", "vision_proj", "text_proj", "itm_head"]
    /// `bf16_fp32_weight_grads` was set in the file (its entries must match parameters).
    public var explicitBF16FP32WeightGrads = false
    /// The objective (pretraining unless a command switches to retrieval, see ``adoptRetrievalTask()``).
    public var task = TrainingTask.pretrain
    /// `Retrieval.yaml`'s keys (read always; used by the retrieval task and evaluation).
    public var retrieval = RetrievalSettings()
    /// Evaluate retrieval on `val_file`/`test_file` (or `--eval-file`) after every N-th epoch
    /// (key `eval_every`, flag `--eval-every`; 0: never).
    public var evalEvery = 0
    /// `max_length` / `augment` were set in the file (the retrieval task keeps them).
    var explicitMaxLength = false, explicitAugment = false
    /// Notes about known keys this build ignores (printed by the worker).
    public var notes: [String] = []
    /// Path of the file this came from.
    public var path: String = "(defaults)"

    public init() {}

    /// Reads an ALBEF-style YAML file; `bert_config` and `text_init` paths are relative to it.
    public static func load(_ path: String) throws -> TrainConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ConfigError.missingFile(path) }
        let any: Any?
        do { any = try Yams.load(yaml: text) } catch { throw ConfigError.parse(file: path, message: "\(error)") }
        guard let root = any as? [String: Any] else { throw ConfigError.parse(file: path, message: "the top level must be a mapping") }
        return try TrainConfig(root, path: path)
    }

    init(_ y: [String: Any], path: String) throws {
        self.path = path
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
        notes = try ConfigKeys.check(y, file: path)
        let r = YAMLReader(y, file: path)
        maxImagePixels = try r.opt("max_image_pixels") ?? maxImagePixels
        maxBadFraction = try r.opt("max_bad_fraction") ?? maxBadFraction
        if let p: String = try r.opt("precision") {
            guard let v = Precision(rawValue: p.lowercased()) else {
                throw ConfigError.invalid(key: "precision", message: "must be one of \(Precision.allCases.map(\.rawValue).joined(separator: ", ")), got '\(p)'", file: path)
            }
            precision = v
        }
        if let v = y["bf16_fp32_weight_grads"], !(v is NSNull) {
            guard let l = v as? [Any], let names = l.map({ $0 as? String }) as? [String], !names.contains(where: \.isEmpty) else {
                throw ConfigError.wrongType(key: "bf16_fp32_weight_grads", expected: "a list of module names (state_dict prefixes such as text_encoder or visual_encoder.blocks.0), [] for none", file: path)
            }
            bf16FP32WeightGrads = names
            explicitBF16FP32WeightGrads = true
        }
        if let bertPath: String = try r.opt("bert_config") {
            let p = bertPath.hasPrefix("/") ? bertPath : dir.appendingPathComponent(bertPath).path
            do { model.bert = try BertConfig.load(p) } catch let e as ConfigError { throw e } catch {
                throw ConfigError.parse(file: p, message: "\(error)")
            }
        }
        if let b = y["bert"] as? [String: Any] {
            try BertConfig.checkKeys(b, file: path + " (key bert)")
            model.bert = try JSONDecoder().decode(BertConfig.self, from: JSONSerialization.data(withJSONObject: b))
        }
        model.imageRes = try r.opt("image_res") ?? model.imageRes
        model.visionWidth = try r.opt("vision_width") ?? model.visionWidth
        model.embedDim = try r.opt("embed_dim") ?? model.embedDim
        batchSize = try r.opt("batch_size") ?? batchSize
        accumSteps = try r.opt("accum_steps") ?? accumSteps
        if let g: String = try r.opt("grad_reduce") {
            guard ["fp32", "bf16"].contains(g) else {
                throw ConfigError.invalid(key: "grad_reduce", message: "must be fp32 or bf16, got \(g)", file: path)
            }
            gradReduceBF16 = g == "bf16"
        }
        // YAML reads a bare `off` / `on` as a boolean: accept those as well.
        if let g: Any = try r.opt("grad_overlap") {
            switch g {
            case let b as Bool: gradOverlap = b
            case let t as String where ["thread", "off"].contains(t): gradOverlap = t == "thread"
            default: throw ConfigError.invalid(key: "grad_overlap", message: "must be thread or off, got \(g)", file: path)
            }
        }
        if let mb: Double = try r.opt("grad_bucket_mb") {
            guard mb > 0, mb <= 4096 else {
                throw ConfigError.invalid(key: "grad_bucket_mb", message: "must be in (0, 4096] MB, got \(mb)", file: path)
            }
            gradBucketMB = mb
        }
        if let g: String = try r.opt("grad_topology") {
            guard ["flat", "hierarchical"].contains(g) else {
                throw ConfigError.invalid(key: "grad_topology", message: "must be flat or hierarchical, got \(g)", file: path)
            }
            gradHierarchical = g == "hierarchical"
        }
        model.temp = Float(try r.opt("temp") as Double? ?? Double(model.temp))
        model.mlmProbability = try r.opt("mlm_probability") ?? model.mlmProbability
        model.queueSize = try r.opt("queue_size") ?? model.queueSize
        model.momentum = Float(try r.opt("momentum") as Double? ?? Double(model.momentum))
        model.alpha = Float(try r.opt("alpha") as Double? ?? Double(model.alpha))
        maxLength = try r.opt("max_length") ?? maxLength
        explicitMaxLength = y["max_length"] != nil
        explicitAugment = y["augment"] != nil
        retrieval = try TrainConfig.readRetrieval(r, dir: dir)
        evalEvery = try r.opt("eval_every") ?? evalEvery
        guard evalEvery >= 0 else { throw ConfigError.invalid(key: "eval_every", message: "must be ≥ 0 (epochs between evaluations; 0: never), got \(evalEvery)", file: path) }
        alphaRampEpochs = try r.opt("alpha_ramp_epochs") ?? alphaRampEpochs
        if let tf = y["train_file"] {
            if let s = tf as? String { trainFiles = [s] } else if let l = tf as? [String] { trainFiles = l } else {
                throw ConfigError.wrongType(key: "train_file", expected: "a path or a list of paths", file: path)
            }
        }
        if let a = try r.section("augment") {
            if let cs = a.y["crop_scale"] {
                guard let l = cs as? [Any], l.count == 2, let lo = (l[0] as? Double) ?? (l[0] as? Int).map(Double.init),
                      let hi = (l[1] as? Double) ?? (l[1] as? Int).map(Double.init), 0 < lo, lo <= hi, hi <= 1 else {
                    throw ConfigError.wrongType(key: "augment.crop_scale", expected: "[low, high] with 0 < low ≤ high ≤ 1", file: path)
                }
                cropScale = (lo, hi)
            }
            flip = try a.opt("flip") ?? flip
            randAugment = try a.opt("randaugment") ?? randAugment
            flipSwapsLeftRight = try a.opt("flip_swaps_left_right") ?? flipSwapsLeftRight
        }
        if let v: String = try r.opt("vocab") { vocab = v.hasPrefix("/") ? v : dir.appendingPathComponent(v).path }
        if let t: String = try r.opt("text_init") { textInit = t.hasPrefix("/") ? t : dir.appendingPathComponent(t).path }
        if let t: String = try r.opt("vision_init") { visionInit = t.hasPrefix("/") ? t : dir.appendingPathComponent(t).path }
        if let t: String = try r.opt("checkpoint") { checkpoint = t.hasPrefix("/") ? t : dir.appendingPathComponent(t).path }
        if let v = try r.section("vit") {
            model.patchSize = try v.opt("patch_size") ?? model.patchSize
            model.vitDepth = try v.opt("depth") ?? model.vitDepth
            model.vitHeads = try v.opt("num_heads") ?? model.vitHeads
            model.vitMlpRatio = Float(try v.opt("mlp_ratio") as Double? ?? Double(model.vitMlpRatio))
        }
        if let o = try r.section("optimizer") {
            let opt: String = try o.opt("opt") ?? "adamW"
            guard opt.lowercased() == "adamw" else { throw ConfigError.invalid(key: "optimizer.opt", message: "only adamW is supported, got \(opt)", file: path) }
            lr = try o.opt("lr") ?? lr
            weightDecay = try o.opt("weight_decay") ?? weightDecay
            optimizerInBackward = try o.opt("in_backward") ?? optimizerInBackward
            pretrainedLRMult = try o.opt("pretrained_lr_mult") ?? pretrainedLRMult
            guard pretrainedLRMult > 0 else {
                throw ConfigError.invalid(key: "optimizer.pretrained_lr_mult", message: "must be > 0, got \(pretrainedLRMult)", file: path)
            }
        }
        if let s = try r.section("schedular") ?? r.section("scheduler") {
            let kind: String = try s.opt("sched") ?? "cosine"
            epochs = try s.opt("epochs") ?? epochs
            let minLR: Double = try s.opt("min_lr") ?? 1e-5
            let warmLR: Double = try s.opt("warmup_lr") ?? 1e-5
            let warmE: Int = try s.opt("warmup_epochs") ?? 20
            switch kind {
            case "cosine":
                schedule = .albef(baseLR: lr, warmupLR: warmLR, minLR: minLR, warmupEpochs: warmE,
                                  stepSize: try s.opt("warmup_step_size") ?? 100, epochs: epochs)
            case "cosine_per_step":
                schedule = .cosinePerStep(baseLR: lr, minLR: minLR, warmupSteps: try s.opt("warmup_steps") ?? 100,
                                          totalSteps: try s.opt("total_steps") ?? 10_000)
            case "constant":
                schedule = .constant(lr)
            default:
                throw ConfigError.invalid(key: "schedular.sched", message: "unknown schedule '\(kind)' (cosine, cosine_per_step, constant)", file: path)
            }
        }
        guard model.bert.encoderWidth == model.visionWidth else {
            throw ConfigError.invalid(key: "vision_width", message: "\(model.visionWidth) differs from bert encoder_width \(model.bert.encoderWidth)", file: path)
        }
        guard model.visionWidth % model.vitHeads == 0 else {
            throw ConfigError.invalid(key: "vit.num_heads", message: "vision_width \(model.visionWidth) is not divisible by \(model.vitHeads)", file: path)
        }
        guard model.imageRes % model.patchSize == 0 else {
            throw ConfigError.invalid(key: "image_res", message: "\(model.imageRes) is not a multiple of the patch size \(model.patchSize)", file: path)
        }
        guard batchSize >= 2 else { throw ConfigError.invalid(key: "batch_size", message: "must be ≥ 2 (ITM negatives need another sample)", file: path) }
        try validateRanges()
    }
}

/// Typed access to a YAML mapping with errors that name the key.
struct YAMLReader {
    let y: [String: Any]
    let file: String
    let prefix: String
    init(_ y: [String: Any], file: String, prefix: String = "") { self.y = y; self.file = file; self.prefix = prefix }

    func opt<T>(_ key: String) throws -> T? {
        guard let v = y[key], !(v is NSNull) else { return nil }
        if let t = v as? T { return t }
        if T.self == Double.self, let i = v as? Int { return Double(i) as? T }
        if T.self == Double.self, let s = v as? String, let d = Double(s) { return d as? T }  // YAML "1e-4" is a string
        if T.self == Int.self, let d = v as? Double, d == d.rounded() { return Int(d) as? T }
        throw ConfigError.wrongType(key: prefix + key, expected: "\(T.self) (got \(type(of: v)) \(v))", file: file)
    }

    func section(_ key: String) throws -> YAMLReader? {
        guard let v = y[key] else { return nil }
        guard let d = v as? [String: Any] else { throw ConfigError.wrongType(key: prefix + key, expected: "a mapping", file: file) }
        return YAMLReader(d, file: file, prefix: prefix + key + ".")
    }
}

extension TrainConfig {
    /// Replaces the base learning rate (optimizer and schedule).
    public mutating func overrideLR(_ v: Double) {
        lr = v
        switch schedule {
        case let .albef(_, w, m, we, ss, e): schedule = .albef(baseLR: v, warmupLR: min(w, v), minLR: min(m, v), warmupEpochs: we, stepSize: ss, epochs: e)
        case let .cosinePerStep(_, m, ws, t): schedule = .cosinePerStep(baseLR: v, minLR: min(m, v), warmupSteps: ws, totalSteps: t)
        case .constant: schedule = .constant(v)
        }
    }
}
