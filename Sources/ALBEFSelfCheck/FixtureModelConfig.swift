import ALBEF
import Foundation
import NN
import Tensor

/// The model configuration of an ALBEF fixture (kinds `albef-pretrain-step`,
/// `albef-retrieval-step`): read from `fixture.json`, then every size the tensors fix taken
/// from the tensors themselves, so fixtures of other shapes need no code change.
public enum FixtureModelConfig {
    /// Config keys that are not a model preset.
    static let nonPresetKeys = ["albef_config", "retrieval_config", "bert_config", "optimizer", "special_token_ids"]

    /// Builds the model config from `fixture.json`: `config.tiny` (or whichever entry of `config`
    /// holds the most ViT/BERT shape keys: `micro`, ...), `config.bert_config`, with
    /// `config.albef_config` / `config.retrieval_config` (ALBEF's YAML) as the fallback for keys
    /// the preset lacks. Returns the preset's batch and text length (0 when absent) and α.
    public static func read(_ json: [String: Any]) throws -> (ALBEFModelConfig, batch: Int, length: Int, alpha: Float) {
        guard let cfg = json["config"] as? [String: Any] else { throw SelfCheckError.invalid("fixture.json: no 'config'") }
        // The model preset: `config.tiny`, else whichever entry holds ViT/BERT shape keys.
        let presetKeys = ["vit_heads", "vit_embed", "vit_depth", "patch_size", "image_res", "bert_hidden"]
        let candidates = cfg.filter { !nonPresetKeys.contains($0.key) }
            .sorted { $0.key < $1.key }.compactMap { $0.value as? [String: Any] }
        let preset = (cfg["tiny"] as? [String: Any])
            ?? candidates.max { a, b in presetKeys.filter { a[$0] != nil }.count < presetKeys.filter { b[$0] != nil }.count }
            .flatMap { p in presetKeys.contains { p[$0] != nil } ? p : nil } ?? [:]
        guard let bertJSON = cfg["bert_config"] else { throw SelfCheckError.invalid("fixture.json: no 'config.bert_config'") }
        let bert = try JSONDecoder().decode(BertConfig.self, from: JSONSerialization.data(withJSONObject: bertJSON))
        var c = ALBEFModelConfig()
        c.bert = bert
        let albef = cfg["albef_config"] as? [String: Any] ?? cfg["retrieval_config"] as? [String: Any] ?? [:]
        func int(_ k: String, _ d: Int) -> Int { num(preset[k]).map { Int($0) } ?? num(albef[k]).map { Int($0) } ?? d }
        func flt(_ k: String, _ d: Double) -> Double { num(preset[k]) ?? num(albef[k]) ?? d }
        c.imageRes = int("image_res", 256)
        c.patchSize = int("patch_size", 16)
        c.visionWidth = int("vit_embed", num(albef["vision_width"]).map { Int($0) } ?? 768)
        c.vitDepth = int("vit_depth", 12)
        c.vitHeads = int("vit_heads", 12)
        c.vitMlpRatio = Float(flt("vit_mlp_ratio", 4))
        c.embedDim = int("embed_dim", 256)
        c.queueSize = int("queue_size", 65536)
        c.temp = Float(flt("temp", 0.07))
        c.momentum = Float(flt("momentum", 0.995))
        c.mlmProbability = flt("mlm_probability", 0.15)
        let alpha = Float(num(cfg["alpha"]) ?? flt("alpha", 0.4))
        c.alpha = alpha
        if let sp = cfg["special_token_ids"] as? [String: Any] {
            c.padId = Int32(num(sp["pad"]) ?? 0); c.clsId = Int32(num(sp["cls"]) ?? 101)
            c.sepId = Int32(num(sp["sep"]) ?? 102); c.maskId = Int32(num(sp["mask"]) ?? 103)
        }
        return (c, int("batch", 0), int("text_len", 0), alpha)
    }

    /// Sizes from the tensors (a fixture's config may name its preset otherwise or omit keys):
    /// the image resolution from `batch/image`, E and Q from `image_queue`, the ViT's patch size
    /// and width from the patch embedding, its depth from the blocks, the MLP ratio from the
    /// first block. The ViT's heads exist only in the config; they must divide the width.
    public static func applyTensorShapes(_ file: SafeTensorsFile, to config: inout ALBEFModelConfig) throws {
        if let img = file.entries["batch/image"]?.shape, img.count == 4 { config.imageRes = img[2] }
        if let q = file.entries["image_queue"]?.shape, q.count == 2 { config.embedDim = q[0]; config.queueSize = q[1] }
        if let pe = file.entries["visual_encoder.patch_embed.proj.weight"]?.shape, pe.count == 4 {
            config.visionWidth = pe[0]
            config.patchSize = pe[2]
        }
        let blocks = Set(file.entries.keys.compactMap { k -> Int? in
            guard k.hasPrefix("visual_encoder.blocks.") else { return nil }
            return Int(k.dropFirst("visual_encoder.blocks.".count).prefix { $0.isNumber })
        })
        if !blocks.isEmpty { config.vitDepth = blocks.count }
        if let fc1 = file.entries["visual_encoder.blocks.0.mlp.fc1.weight"]?.shape, fc1.count == 2, config.visionWidth > 0 {
            config.vitMlpRatio = Float(fc1[0]) / Float(config.visionWidth)
        }
        guard config.vitHeads > 0, config.visionWidth % config.vitHeads == 0 else {
            throw SelfCheckError.invalid("fixture.json: ViT width \(config.visionWidth) is not divisible by vit_heads \(config.vitHeads); give the heads as config.<preset>.vit_heads")
        }
    }
}
