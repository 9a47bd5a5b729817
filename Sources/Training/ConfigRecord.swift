import ALBEF
import Foundation

/// The config a checkpoint was trained with, stored in its `state.json` (not only the file's
/// path, which may have changed since): the model's shape, which a resume must match, and the
/// training settings, whose changes a resume lists.
public struct ConfigRecord: Codable, Equatable, Sendable {
    /// The YAML file it came from, and its text as read.
    public var file: String
    public var text: String?
    /// Model shape (and queue size): tensors and buffers depend on these.
    public var shape: [String: String]
    /// Everything else that changes what a step computes.
    public var settings: [String: String]

    public init(_ c: TrainConfig) {
        file = c.path
        text = try? String(contentsOfFile: c.path, encoding: .utf8)
        let m = c.model
        var shape: [String: String] = [
            "image_res": "\(m.imageRes)", "vit.patch_size": "\(m.patchSize)", "vision_width": "\(m.visionWidth)",
            "vit.depth": "\(m.vitDepth)", "vit.num_heads": "\(m.vitHeads)", "vit.mlp_ratio": "\(m.vitMlpRatio)",
            "embed_dim": "\(m.embedDim)", "queue_size": "\(m.queueSize)",
        ]
        if let d = try? JSONEncoder().encode(m.bert), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] {
            for (k, v) in o where ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings",
                                   "type_vocab_size", "vocab_size", "fusion_layer", "encoder_width"].contains(k) {
                shape["bert." + k] = "\(v)"
            }
        }
        self.shape = shape
        settings = [
            "batch_size": "\(c.batchSize)", "accum_steps": "\(c.accumSteps)", "max_length": "\(c.maxLength)",
            "temp": "\(m.temp)", "mlm_probability": "\(m.mlmProbability)", "momentum": "\(m.momentum)", "alpha": "\(m.alpha)",
            "alpha_ramp_epochs": "\(c.alphaRampEpochs)", "optimizer.lr": "\(c.lr)", "optimizer.weight_decay": "\(c.weightDecay)",
            "optimizer.pretrained_lr_mult": "\(c.pretrainedLRMult)", "schedular": "\(c.schedule)", "schedular.epochs": "\(c.epochs)",
            "augment": "crop_scale \(c.cropScale) flip \(c.flip) randaugment \(c.randAugment)",
            "bert.hidden_dropout_prob": "\(m.bert.hiddenDropoutProb)", "bert.attention_probs_dropout_prob": "\(m.bert.attentionProbsDropoutProb)",
            "train_file": c.trainFiles.joined(separator: ", "), "grad_reduce": c.gradReduceBF16 ? "bf16" : "fp32",
            "grad_topology": c.gradHierarchical ? "hierarchical" : "flat",
            "precision": c.precision.rawValue, "bf16_fp32_weight_grads": c.bf16FP32WeightGrads.joined(separator: ", "), "task": c.task.rawValue,
        ]
    }
}

extension CheckpointState {
    /// Refuses a resume whose model shape or queue size differs from the checkpoint's config
    /// (the error names each key with both values) and reports each other setting that changed
    /// through `note`. Checkpoints without a record (older ones) pass.
    public func checkCompatible(with config: TrainConfig, path: String, note: (String) -> Void) throws {
        guard let before = trainConfig else { return }
        let now = ConfigRecord(config)
        let shape = before.shape.keys.sorted().compactMap { k -> String? in
            let old = before.shape[k]!, new = now.shape[k] ?? "(unset)"
            return old == new ? nil : "\(k) \(old) → \(new)"
        }
        guard shape.isEmpty else {
            throw TrainingError.checkpoint("\(path) was trained with another model shape than \(config.path) says: \(shape.joined(separator: "; ")). Resume with the config it was trained with (\(before.file)), or start a new run in another --output-dir")
        }
        for k in before.settings.keys.sorted() {
            let old = before.settings[k]!, new = now.settings[k] ?? "(unset)"
            if old != new { note("resume: \(k) changed since the checkpoint: \(old) → \(new)") }
        }
    }
}
