import NN
import Tensor

/// The ITM forward on one positive and two hard-negative pairs per sample (spec §2.1 steps
/// 8–12), shared by the pretraining and the retrieval model.
public struct ImageTextMatching {
    /// `itm_head` logits `[3B, 2]`: B positives, then (text b, negative image), then
    /// (negative text, image b).
    public var logits: Tensor
    /// Labels: B ones then 2B zeros.
    public var labels: [Int32]
    /// Mean cross-entropy over the 3B rows.
    public var loss: Tensor
    /// Fusion [CLS] outputs: positives `[B, C]`, negatives `[2B, C]`.
    public var positiveCLS: Tensor, negativeCLS: Tensor
    /// The negatives used: image of each text, text of each image.
    public var negativeImage: [Int], negativeText: [Int]

    /// Fraction of the 3B rows whose argmax is the label (logit 1 > logit 0 means "match").
    public var accuracy: Float {
        var correct = 0
        for r in 0..<labels.count {
            let pred: Int32 = logits.data[r * 2 + 1] > logits.data[r * 2] ? 1 : 0
            if pred == labels[r] { correct += 1 }
        }
        return Float(correct) / Float(labels.count)
    }

    /// Runs the positive fusion pass, then asks `negatives` for the hard negatives (sampled
    /// from the ITC similarities, or given), then the negative pass, the head and the loss.
    ///
    /// Concretely, with T = text_embeds `[B, L, C]`, M its mask and X = image_embeds `[B, 1+N, C]`:
    ///
    ///     P   = fusion(T, M, X)
    ///     Neg = fusion([T ; T[nt]], [M ; M[nt]], [X[ni] ; X])
    ///     logits = itm_head([P[:, 0] ; Neg[:, 0]]),  loss = CE(logits, [1]·B + [0]·2B)
    ///
    /// The image tokens are all unmasked (ALBEF's `image_atts` are ones). The negative pass's
    /// cross-attention keys/values are the positive pass's, gathered (`cache`), which is what
    /// projecting `X[rows]` computes; gradients flow through every gathered row.
    /// - Parameters:
    ///   - bert: the fusion BERT (layers `fusion_layer..<N`).
    ///   - cache: records the positive pass's cross-attention projections; on return its `rows`
    ///     select the negative pass's images (the pretraining model reuses it for MLM).
    public static func forward(bert: BertModel, head: Linear, textEmbeds: Tensor, attentionMask: [Int32], imageEmbeds: Tensor,
                               batch b: Int, length l: Int, cache: CrossAttentionCache,
                               negatives: () -> (image: [Int], text: [Int])) -> ImageTextMatching {
        let outputPos = bert(hidden: textEmbeds, attentionMask: attentionMask, batch: b, length: l,
                             image: imageEmbeds, mode: .fusion, cache: cache)
        let (negImage, negText) = negatives()
        precondition(negImage.count == b && negText.count == b && (negImage + negText).allSatisfy { (0..<b).contains($0) },
                     "ImageTextMatching: negatives \(negImage), \(negText) must be \(b) indices in 0..<\(b) each")
        let textEmbedsNeg = textEmbeds.gatherRows(negText)
        var textAttsNeg = [Int32]()
        textAttsNeg.reserveCapacity(b * l)
        for k in negText { textAttsNeg += attentionMask[(k * l)..<((k + 1) * l)] }
        let textAll = Tensor.concat([textEmbeds, textEmbedsNeg], axis: 0)
        // Images [negative images ; images] = imageEmbeds[rows].
        cache.rows = negImage + Array(0..<b)
        let outputNeg = bert(hidden: textAll, attentionMask: attentionMask + textAttsNeg, batch: 2 * b, length: l,
                             image: imageEmbeds, mode: .fusion, cache: cache)
        let pos = outputPos.select(axis: 1, 0), neg = outputNeg.select(axis: 1, 0)
        let logits = head(Tensor.concat([pos, neg], axis: 0))
        let labels = [Int32](repeating: 1, count: b) + [Int32](repeating: 0, count: 2 * b)
        return ImageTextMatching(logits: logits, labels: labels, loss: logits.crossEntropy(labels: labels),
                                 positiveCLS: pos, negativeCLS: neg, negativeImage: negImage, negativeText: negText)
    }
}
