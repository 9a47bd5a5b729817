import NN
import Tensor

/// `Retrieval.py`'s `evaluation`: ITC ranking of every image–caption pair, then ITM re-ranking of
/// each row's top k (spec §8), for any ALBEF model (`ALBEFRetrieval`, `ALBEFPretrain`).
public struct RetrievalScoreMatrices {
    /// `image_feats` `[N, 1+P, C]` (ViT tokens) and `image_embeds` `[N, E]` (normalised projections).
    public var imageFeats: Tensor, imageEmbeds: Tensor
    /// `text_feats` `[T, L, C]` (text-mode BERT) and `text_embeds` `[T, E]`.
    public var textFeats: Tensor, textEmbeds: Tensor
    /// `sims_matrix = image_embeds @ text_embedsᵀ` `[N, T]` (cosines, no temperature).
    public var sims: Tensor
    /// `score_matrix_i2t` `[N, T]` and `score_matrix_t2i` `[T, N]`, row-major: the ITM
    /// "match" logit on each row's top k, exactly −100 elsewhere.
    public var scoreI2T: [Float], scoreT2I: [Float]
    /// The top-k candidates of each row (descending similarity; ties to the lower index).
    public var topI2T: [[Int]], topT2I: [[Int]]
    public var images: Int, texts: Int, k: Int

    /// The score value of entries outside a row's top k.
    public static let unscored: Float = -100

    /// Computes the matrices in eval mode (dropout off; the training mode is restored after)
    /// without gradient.
    ///
    ///     image_feats = ViT(images);  image_embeds = normalize(vision_proj(image_feats[:, 0]))
    ///     text_feats = BERT_text(ids, mask);  text_embeds = normalize(text_proj(text_feats[:, 0]))
    ///     sims = image_embeds @ text_embedsᵀ
    ///     i2t[i, topk(sims[i])] = itm_head(fusion(text_feats[topk], mask[topk], image_feats[i] × k))[:, 1]
    ///     t2i[t, topk(sims[:, t])] = itm_head(fusion(text_feats[t] × k, mask[t] × k, image_feats[topk]))[:, 1]
    ///
    /// - Parameters:
    ///   - images: normalised eval images `[N, 3, H, W]`.
    ///   - ids, mask: captions `[T, L]` row-major (the reference pads to `max_length` 30).
    ///   - k: `k_test`; the reference needs k ≤ N and k ≤ T (here clamped to them).
    ///   - imageChunk, textChunk: forward batch sizes (the reference: `batch_size_test`, 256).
    public static func compute<M: ALBEFEncoders>(model: M, images: Tensor, ids: [Int32], mask: [Int32], length l: Int, k: Int,
                                                 imageChunk: Int = 64, textChunk: Int = 256) -> RetrievalScoreMatrices {
        let wasTraining = model.isTraining
        model.train(false)
        defer { model.train(wasTraining) }
        return withNoGrad {
            let n = images.shape[0], t = ids.count / max(l, 1)
            precondition(ids.count == t * l && mask.count == ids.count, "RetrievalScoreMatrices: ids/mask must be [T, \(l)]")
            let per = images.count / max(n, 1)
            var feats: [Tensor] = [], embeds: [Tensor] = []
            var s = 0
            while s < n {
                let e = min(n, s + max(imageChunk, 1))
                let x = Tensor(Array(UnsafeBufferPointer(start: images.data + s * per, count: (e - s) * per)),
                               shape: [e - s] + Array(images.shape.dropFirst()))
                let (f, emb) = model.encodeImage(x)
                feats.append(f)
                embeds.append(emb)
                s = e
            }
            var tFeats: [Tensor] = [], tEmbeds: [Tensor] = []
            s = 0
            while s < t {
                let e = min(t, s + max(textChunk, 1))
                let (h, emb) = model.encodeText(ids: Array(ids[(s * l)..<(e * l)]), attentionMask: Array(mask[(s * l)..<(e * l)]),
                                                batch: e - s, length: l)
                tFeats.append(h)
                tEmbeds.append(emb)
                s = e
            }
            let imageFeats = Tensor.concat(feats, axis: 0), imageEmbeds = Tensor.concat(embeds, axis: 0)
            let textFeats = Tensor.concat(tFeats, axis: 0), textEmbeds = Tensor.concat(tEmbeds, axis: 0)
            let sims = imageEmbeds.matmul(textEmbeds, transposeB: true)  // [N, T]
            let kk = min(k, n, t)

            /// `itm_head(fusion(...)[:, 0])[:, 1]` for the pairs (text j, image i).
            func itmScores(textIdx: [Int], imageIdx: [Int]) -> [Float] {
                var m = [Int32]()
                m.reserveCapacity(textIdx.count * l)
                for j in textIdx { m += mask[(j * l)..<((j + 1) * l)] }
                let out = model.textBert(hidden: textFeats.gatherRows(textIdx), attentionMask: m, batch: textIdx.count, length: l,
                                         image: imageFeats.gatherRows(imageIdx), mode: .fusion)
                let logits = model.itmHead(out.select(axis: 1, 0))
                return (0..<textIdx.count).map { logits.data[$0 * 2 + 1] }
            }
            var scoreI2T = [Float](repeating: unscored, count: n * t), scoreT2I = [Float](repeating: unscored, count: t * n)
            var topI2T: [[Int]] = [], topT2I: [[Int]] = []
            for i in 0..<n {
                let top = topK(Array(UnsafeBufferPointer(start: sims.data + i * t, count: t)), kk)
                topI2T.append(top)
                for (j, v) in zip(top, itmScores(textIdx: top, imageIdx: Array(repeating: i, count: kk))) { scoreI2T[i * t + j] = v }
            }
            for j in 0..<t {
                let top = topK((0..<n).map { sims.data[$0 * t + j] }, kk)
                topT2I.append(top)
                for (i, v) in zip(top, itmScores(textIdx: Array(repeating: j, count: kk), imageIdx: top)) { scoreT2I[j * n + i] = v }
            }
            return RetrievalScoreMatrices(imageFeats: imageFeats, imageEmbeds: imageEmbeds, textFeats: textFeats, textEmbeds: textEmbeds,
                                          sims: sims, scoreI2T: scoreI2T, scoreT2I: scoreT2I, topI2T: topI2T, topT2I: topT2I,
                                          images: n, texts: t, k: kk)
        }
    }

    /// Indices of the k largest values, descending (`torch.topk`); equal values in index order.
    public static func topK(_ row: [Float], _ k: Int) -> [Int] {
        Array(row.indices.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }.prefix(k))
    }
}
