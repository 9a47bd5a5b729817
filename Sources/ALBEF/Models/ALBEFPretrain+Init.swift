import Foundation
import NN
import Tensor

/// Where a training run's weights start, as ALBEF's `Pretrain.py` / `Retrieval.py` set them up.
extension ALBEFPretrain {
    /// ALBEF's `init_deit`: timm/DeiT ViT weights (`.pth` with `model`, or safetensors) into
    /// `visual_encoder`, `pos_embed` interpolated to this `image_res`; the momentum encoders are
    /// then copied from the online ones (`copy_params`). The report lists `head.*` as unexpected.
    @discardableResult
    public func loadVisionInit(_ file: WeightFile) throws -> LoadReport {
        let r = try visualEncoder.loadDeiT(file)
        copyOnlineToMomentum()
        return r
    }

    /// `BertForMaskedLM.from_pretrained` as ALBEF's text encoder does it: `text_encoder.bert`
    /// from the file's `bert.*` (or plain) keys, and the MLM head `text_encoder.cls.predictions.*`
    /// from `cls.predictions.*` where the file has it (the decoder weight is the word-embedding
    /// matrix, so it is filled by the embeddings; the decoder bias is `cls.predictions.bias`).
    /// Returns the encoder's report and the head's (nil when the file has no `cls.` keys).
    public func loadTextInit(_ file: WeightFile) throws -> (bert: LoadReport, head: LoadReport?) {
        var bert = try loadPlainBert(file)
        guard file.keys.contains(where: { $0.hasPrefix("cls.") }) else { return (bert, nil) }
        let keys = Set(file.keys)
        var head = try textEncoder.cls.load(from: file, keyMap: { k in
            let key = "cls." + k
            if keys.contains(key) { return key }
            let old = key.replacingOccurrences(of: "LayerNorm.weight", with: "LayerNorm.gamma").replacingOccurrences(of: "LayerNorm.bias", with: "LayerNorm.beta")
            return keys.contains(old) ? old : key
        }, strict: false, include: { $0 != "predictions.decoder.weight" })
        if let bad = head.shapeMismatches.first {
            throw CheckpointError.shapeMismatch(key: "text_encoder.cls." + bad.key, expected: bad.expected, got: bad.got, path: file.path)
        }
        head.unexpected = head.unexpected.filter { $0.hasPrefix("cls.") && $0 != "cls.predictions.decoder.weight" }
        head.tiedFilled.append("predictions.decoder.weight")
        bert.unexpected.removeAll { $0.hasPrefix("cls.") }  // the head's keys, reported by `head`
        copyOnlineToMomentum()
        return (bert, head)
    }

    /// A whole ALBEF checkpoint (the reference's `torch.save({'model': ..., ...})` `.pth`, or one
    /// of ours: a checkpoint directory or its `model.safetensors`): every key of the state dict,
    /// momentum encoders and queues included, with `visual_encoder(_m).pos_embed` re-interpolated
    /// when the checkpoint's `image_res` differs (as `Retrieval.py` does). Mis-shaped keys are an
    /// error naming the file.
    @discardableResult
    public func loadALBEFCheckpoint(_ path: String) throws -> LoadReport {
        var isDir: ObjCBool = false
        let p = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
            ? URL(fileURLWithPath: path).appendingPathComponent("model.safetensors").path : path
        let file = try openWeightFile(p)
        let r = try loadInterpolatingPosEmbed(file, strict: false)
        if let bad = r.shapeMismatches.first {
            throw CheckpointError.shapeMismatch(key: bad.key, expected: bad.expected, got: bad.got, path: file.path)
        }
        return r
    }
}
