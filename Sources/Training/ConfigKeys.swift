import ALBEF
import Foundation

/// The keys a training YAML may have: what this build reads, and what ALBEF's own config files
/// (Pretrain.yaml, Retrieval.yaml, ...) carry that it knows and ignores (each noted when set). Any
/// other key is an error that names it and suggests the nearest known one (`queue_sise` →
/// `queue_size`), so a typo never silently leaves a default in place.
enum ConfigKeys {
    /// Keys read, per section ("" is the top level). Mappings not listed (`bert`) are checked by
    /// their own decoder.
    static let known: [String: Set<String>] = [
        "": ["bert_config", "bert", "image_res", "vision_width", "embed_dim", "batch_size", "temp", "mlm_probability",
             "queue_size", "momentum", "alpha", "max_length", "alpha_ramp_epochs", "train_file", "augment", "vocab",
             "text_init", "vision_init", "checkpoint", "vit", "optimizer", "schedular", "scheduler",
             "max_image_pixels", "max_bad_fraction", "accum_steps", "grad_reduce", "grad_overlap", "grad_topology", "grad_bucket_mb", "precision", "bf16_fp32_weight_grads", "eval_every"],
        "augment": ["crop_scale", "flip", "randaugment", "flip_swaps_left_right"],
        "vit": ["patch_size", "depth", "num_heads", "mlp_ratio"],
        "optimizer": ["opt", "lr", "weight_decay", "in_backward", "pretrained_lr_mult"],
        "schedular": ["sched", "epochs", "min_lr", "warmup_lr", "warmup_epochs", "warmup_step_size", "warmup_steps", "total_steps"],
    ]

    /// Keys of ALBEF's configs this build knows and ignores, with why.
    static let ignored: [String: [String: String]] = [
        "": ["image_root": "retrieval/VQA data (not read by pretraining)", "test_file": "evaluation data (see `albef-worker eval --heldout`)",
             "val_file": "evaluation data (see `albef-worker eval --heldout`)", "batch_size_train": "fine-tuning (use batch_size)",
             "batch_size_test": "fine-tuning", "k_test": "evaluation (use `albef-worker eval --k`)", "distill": "fine-tuning (pretraining always distils)",
             "warm_up": "fine-tuning", "negative_all_rank": "fine-tuning"],
        "schedular": ["lr": "the base rate is optimizer.lr", "decay_rate": "timm's step decay (the cosine does not use it)",
                      "cooldown_epochs": "timm's cooldown (not used by ALBEF's per-epoch cosine)"],
    ]

    /// Checks `y` (and its known sections); returns a note for each known-and-ignored key set.
    static func check(_ y: [String: Any], file: String) throws -> [String] {
        var notes: [String] = []
        for section in known.keys.sorted() {
            let map: [String: Any]
            if section.isEmpty { map = y } else {
                let key = section == "schedular" && y["schedular"] == nil ? "scheduler" : section
                guard let m = y[key] as? [String: Any] else { continue }
                map = m
            }
            let prefix = section.isEmpty ? "" : section + "."
            let allowed = known[section]!, skip = ignored[section] ?? [:]
            for key in map.keys.sorted() where !allowed.contains(key) {
                if let why = skip[key] {
                    notes.append("\(file): note: \(prefix)\(key) is ignored (\(why))")
                    continue
                }
                let candidates = Array(allowed) + Array(skip.keys)
                let near = candidates.min { editDistance(key, $0) < editDistance(key, $1) }
                let hint = near.flatMap { editDistance(key, $0) <= max(2, key.count / 3) ? "; did you mean '\(prefix)\($0)'?" : nil }
                    ?? "; known keys: \(allowed.sorted().map { prefix + $0 }.joined(separator: ", "))"
                throw ConfigError.invalid(key: prefix + key, message: "unknown key\(hint)", file: file)
            }
        }
        return notes
    }
}

extension TrainConfig {
    /// The whole config (after command-line overrides) for a run of `worldSize` ranks: the ranges
    /// below, and the queue, which receives one global batch (batch_size × ranks) per step.
    public func validate(worldSize: Int) throws {
        guard batchSize >= 2 else { throw ConfigError.invalid(key: "batch_size", message: "must be ≥ 2 (ITM negatives need another sample), got \(batchSize)", file: path) }
        try validateRanges()
        let layout = StepLayout(batchSize: batchSize, ranks: max(worldSize, 1), accumSteps: accumSteps)
        let global = layout.globalBatch
        guard model.queueSize % global == 0 else {
            let sizes = (1...64).filter { model.queueSize % (batchSize * accumSteps * $0) == 0 }.prefix(8).map(String.init).joined(separator: ", ")
            throw ConfigError.invalid(key: "queue_size", message: "\(model.queueSize) is not a multiple of the global batch \(global) (batch_size \(batchSize) × \(worldSize) ranks × accum_steps \(accumSteps)): each optimizer step enqueues one global batch; world sizes that work: \(sizes.isEmpty ? "none" : sizes)", file: path)
        }
    }

    /// Ranges of the values: probabilities in [0, 1), momentum and α in [0, 1], positive sizes,
    /// the text length within BERT's position embeddings. Errors name the key and the file.
    func validateRanges() throws {
        func bad(_ key: String, _ message: String) -> ConfigError { .invalid(key: key, message: message, file: path) }
        guard model.mlmProbability >= 0 && model.mlmProbability < 1 else { throw bad("mlm_probability", "must be in [0, 1), got \(model.mlmProbability)") }
        guard model.momentum >= 0 && model.momentum <= 1 else { throw bad("momentum", "must be in [0, 1], got \(model.momentum)") }
        guard model.alpha >= 0 && model.alpha <= 1 else { throw bad("alpha", "must be in [0, 1], got \(model.alpha)") }
        guard model.temp > 0 && model.temp.isFinite else { throw bad("temp", "must be > 0 (ALBEF clamps it to [0.001, 0.5]), got \(model.temp)") }
        for (key, v) in [("queue_size", model.queueSize), ("embed_dim", model.embedDim), ("image_res", model.imageRes),
                         ("vision_width", model.visionWidth), ("vit.patch_size", model.patchSize), ("vit.depth", model.vitDepth),
                         ("vit.num_heads", model.vitHeads), ("schedular.epochs", epochs)] where v < 1 {
            throw bad(key, "must be ≥ 1, got \(v)")
        }
        guard model.queueSize % batchSize == 0 else {
            throw bad("queue_size", "\(model.queueSize) is not a multiple of batch_size \(batchSize) (each step enqueues whole batches; ALBEF asserts the same)")
        }
        guard accumSteps >= 1 else { throw bad("accum_steps", "must be ≥ 1, got \(accumSteps)") }
        guard maxLength >= 2 else { throw bad("max_length", "must be ≥ 2 ([CLS] and one word piece), got \(maxLength)") }
        guard maxLength <= model.bert.maxPositionEmbeddings else {
            throw bad("max_length", "\(maxLength) exceeds the BERT config's max_position_embeddings \(model.bert.maxPositionEmbeddings); lower max_length or use a BERT with more positions")
        }
        guard lr > 0 && lr.isFinite else { throw bad("optimizer.lr", "must be > 0, got \(lr)") }
        guard weightDecay >= 0 else { throw bad("optimizer.weight_decay", "must be ≥ 0, got \(weightDecay)") }
        guard maxImagePixels > 0 else { throw bad("max_image_pixels", "must be > 0, got \(maxImagePixels)") }
        guard maxBadFraction >= 0 && maxBadFraction <= 1 else { throw bad("max_bad_fraction", "must be in [0, 1], got \(maxBadFraction)") }
    }
}
