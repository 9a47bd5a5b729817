import Foundation

/// The model half of ALBEF's `Pretrain.yaml` plus the ViT shape (which ALBEF hard-codes to
/// ViT-B/16: width 768, depth 12, 12 heads) and the BERT config (`config_bert.json`).
public struct ALBEFModelConfig: Equatable, Sendable {
    public var imageRes: Int = 256
    public var patchSize: Int = 16
    public var visionWidth: Int = 768
    public var vitDepth: Int = 12
    public var vitHeads: Int = 12
    public var vitMlpRatio: Float = 4
    public var embedDim: Int = 256
    public var temp: Float = 0.07
    public var mlmProbability: Double = 0.15
    public var queueSize: Int = 65536
    public var momentum: Float = 0.995
    public var alpha: Float = 0.4
    public var bert = BertConfig()

    public init() {}

    /// Special token ids of the BERT uncased vocabulary.
    public var padId: Int32 = 0, clsId: Int32 = 101, sepId: Int32 = 102, maskId: Int32 = 103
}
