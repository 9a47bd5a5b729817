import ALBEF
import Foundation
import NN

extension ALBEFPretrain {
    /// Applies the config's starting weights in ALBEF's order: `vision_init` (DeiT, `init_deit`),
    /// `text_init` (BERT + MLM head, `from_pretrained`), then `checkpoint` (a whole ALBEF state
    /// dict, which overrides both). Each prints a key report (loaded / missing / unexpected) through
    /// `log`. Returns the online parameters loaded from `text_init` (for `pretrained_lr_mult`).
    public func loadInitialWeights(_ config: TrainConfig, log: (String) -> Void) throws -> Set<ObjectIdentifier> {
        var pretrained = Set<ObjectIdentifier>()
        if let v = config.visionInit {
            let file = try openWeightFile(v)
            let r = try loadVisionInit(file)
            log("vision_init \(v): visual_encoder \(r.summary)")
        }
        if let t = config.textInit {
            let file = try openWeightFile(t)
            let (bert, head) = try loadTextInit(file)
            log("text_init \(t): text_encoder.bert \(bert.summary)")
            log("text_init \(t): text_encoder.cls " + (head.map(\.summary) ?? "not in the file (MLM head keeps its random init)"))
            let loaded = Set(bert.loaded.map { "text_encoder.bert." + $0 })
            for (k, p) in trainableParameters() where loaded.contains(k) { pretrained.insert(ObjectIdentifier(p)) }
        }
        if let c = config.checkpoint {
            let r = try loadALBEFCheckpoint(c)
            log("checkpoint \(c): \(r.summary)")
        }
        return pretrained
    }
}
