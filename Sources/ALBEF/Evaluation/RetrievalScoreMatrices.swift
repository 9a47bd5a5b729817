import NN
import Tensor

/// `Retrieval.py`'s `evaluation`: ITC ranking of every image–caption pair, then ITM re-ranking of
/// each row's top k (spec §8), for any ALBEF model (`ALBEFRetrieval`, `ALBEFPretrain`). The one
/// scorer of the project: `eval`, `eval-retrieval`, `eval_every` and the selfcheck all use it.
///
/// Rank-sliced as `Retrieval.py` under `torch.distributed`: with W ranks, rank r re-ranks the
/// image rows [r·s, (r+1)·s) with s = ⌊N/W⌋ + 1 and the caption rows [r·s', (r+1)·s') with
/// s' = ⌊T/W⌋ + 1; the score matrices are then summed over ranks. (The reference fills every row
/// it does not own with −100 too, so its sum shifts each row by −100·(W−1); here those rows are
/// 0, so the sum is exactly one rank's matrix and the values are those of one process.)
///
/// Images are streamed: `images(range)` is asked for chunks of `imageChunk` images, twice —
/// once for `image_embeds` (all of them, as `sims_matrix` needs), once more for the ViT tokens of
/// the chunks that hold a pair this rank re-ranks. Only one chunk's tokens `[chunk, 1+P, C]` are
/// alive at a time (no `[N, 1+P, C]` tensor), so memory grows with N·E and N·T, not N·P·C.
/// The ITM forward batches do not depend on the world size (i2t: one image's k captions;
/// t2i: one caption with its top-k images of one chunk), so any W gives bit-identical scores.
public struct RetrievalScoreMatrices {
    /// `image_feats` `[N, 1+P, C]` (ViT tokens): only with `keepImageFeatures` (selfcheck).
    public var imageFeats: Tensor?
    /// `image_embeds` `[N, E]` (normalised projections).
    public var imageEmbeds: Tensor
    /// `text_feats` `[T, L, C]` (text-mode BERT) and `text_embeds` `[T, E]`.
    public var textFeats: Tensor, textEmbeds: Tensor
    /// `sims_matrix = image_embeds @ text_embedsᵀ` `[N, T]` (cosines, no temperature).
    public var sims: Tensor
    /// `score_matrix_i2t` `[N, T]` and `score_matrix_t2i` `[T, N]`, row-major: the ITM
    /// "match" logit on each row's top k, exactly −100 elsewhere (after the sum over ranks).
    public var scoreI2T: [Float], scoreT2I: [Float]
    /// The top-k candidates of each row this rank re-ranked (descending similarity; ties to the
    /// lower index); empty for rows of other ranks.
    public var topI2T: [[Int]], topT2I: [[Int]]
    public var images: Int, texts: Int, k: Int

    /// The score value of entries outside a row's top k.
    public static let unscored: Float = -100

    /// The ranks' share of the evaluation and how their score matrices are summed.
    public struct Slicing {
        public var rank: Int, size: Int
        /// In-place sum over ranks of `count` floats (MPI_Allreduce); unused for one rank.
        public var allReduceSum: (UnsafeMutablePointer<Float>, Int) -> Void
        public init(rank: Int, size: Int, allReduceSum: @escaping (UnsafeMutablePointer<Float>, Int) -> Void) {
            self.rank = rank
            self.size = size
            self.allReduceSum = allReduceSum
        }
        public static let single = Slicing(rank: 0, size: 1, allReduceSum: { _, _ in })

        /// `Retrieval.py`'s rows of this rank among `count`: step = count // num_tasks + 1.
        public func rows(_ count: Int) -> Range<Int> {
            let step = count / size + 1
            let start = min(count, rank * step)
            return start..<min(count, start + step)
        }
    }

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
    ///   - imageCount: N; `images(range)` returns the normalised images of `range` `[n, 3, H, W]`.
    ///   - ids, mask: captions `[T, L]` row-major (the reference pads to `max_length` 30).
    ///   - k: `k_test`; the reference needs k ≤ N and k ≤ T (here clamped to them).
    ///   - imageChunk, textChunk: forward batch sizes (the reference: `batch_size_test`).
    ///   - slicing: this rank's rows and the sum over ranks (`.single`: one process).
    public static func compute<M: ALBEFEncoders>(model: M, imageCount n: Int, images: (Range<Int>) throws -> Tensor,
                                                 ids: [Int32], mask: [Int32], length l: Int, k: Int,
                                                 imageChunk: Int = 64, textChunk: Int = 256, slicing: Slicing = .single,
                                                 keepImageFeatures: Bool = false) rethrows -> RetrievalScoreMatrices {
        let wasTraining = model.isTraining
        model.train(false)
        defer { model.train(wasTraining) }
        defer { BF16Weights.joinAll() }  // bf16 GEMMs split the weights they read; a checkpoint or checksum may read them next
        return try withNoGrad {
            let t = ids.count / max(l, 1)
            precondition(ids.count == t * l && mask.count == ids.count, "RetrievalScoreMatrices: ids/mask must be [T, \(l)]")
            let chunk = max(imageChunk, 1)
            let chunks = stride(from: 0, to: n, by: chunk).map { $0..<min(n, $0 + chunk) }

            // Texts (every rank encodes all of them, as Retrieval.py).
            var tFeats: [Tensor] = [], tEmbeds: [Tensor] = []
            var s = 0
            while s < t {
                let e = min(t, s + max(textChunk, 1))
                let (h, emb) = model.encodeText(ids: Array(ids[(s * l)..<(e * l)]), attentionMask: Array(mask[(s * l)..<(e * l)]),
                                                batch: e - s, length: l)
                tFeats.append(h)
                tEmbeds.append(emb)
                s = e
            }
            let textFeats = Tensor.concat(tFeats, axis: 0), textEmbeds = Tensor.concat(tEmbeds, axis: 0)

            // Pass 1: image embeddings, chunk by chunk (the tokens are dropped unless kept).
            var embeds: [Tensor] = [], feats: [Tensor] = []
            for r in chunks {
                let (f, emb) = model.encodeImage(try images(r))
                embeds.append(emb)
                if keepImageFeatures { feats.append(f) }
            }
            let imageEmbeds = Tensor.concat(embeds, axis: 0)
            let sims = imageEmbeds.matmul(textEmbeds, transposeB: true)  // [N, T]
            let kk = min(k, n, t)

            // This rank's rows and their top k.
            let myImages = slicing.rows(n), myTexts = slicing.rows(t)
            var topI2T = [[Int]](repeating: [], count: n), topT2I = [[Int]](repeating: [], count: t)
            for i in myImages { topI2T[i] = topK(Array(UnsafeBufferPointer(start: sims.data + i * t, count: t)), kk) }
            for j in myTexts { topT2I[j] = topK((0..<n).map { sims.data[$0 * t + j] }, kk) }
            var scoreI2T = [Float](repeating: 0, count: n * t), scoreT2I = [Float](repeating: 0, count: t * n)
            for i in myImages { for j in 0..<t { scoreI2T[i * t + j] = unscored } }
            for j in myTexts { for i in 0..<n { scoreT2I[j * n + i] = unscored } }

            /// `itm_head(fusion(...)[:, 0])[:, 1]` for the pairs (text textIdx[p], image row imageRow[p] of `tokens`).
            func itmScores(textIdx: [Int], tokens: Tensor, imageRow: [Int]) -> [Float] {
                var m = [Int32]()
                m.reserveCapacity(textIdx.count * l)
                for j in textIdx { m += mask[(j * l)..<((j + 1) * l)] }
                let out = model.textBert(hidden: textFeats.gatherRows(textIdx), attentionMask: m, batch: textIdx.count, length: l,
                                         image: tokens.gatherRows(imageRow), mode: .fusion)
                let logits = model.itmHead(out.select(axis: 1, 0))
                return (0..<textIdx.count).map { logits.data[$0 * 2 + 1] }
            }

            // Pass 2: each chunk's tokens once more, for the pairs of this rank with an image in it.
            for (c, r) in chunks.enumerated() {
                let rows = myImages.clamped(to: r)
                let t2i = myTexts.compactMap { j -> (Int, [Int])? in
                    let sel = topT2I[j].filter { r.contains($0) }
                    return sel.isEmpty ? nil : (j, sel)
                }
                guard !rows.isEmpty || !t2i.isEmpty else { continue }
                let tokens = keepImageFeatures ? feats[c] : model.encodeImage(try images(r)).0  // [chunk, 1+P, C]
                for i in rows where kk > 0 {
                    let top = topI2T[i]
                    let sc = itmScores(textIdx: top, tokens: tokens, imageRow: Array(repeating: i - r.lowerBound, count: top.count))
                    for (j, v) in zip(top, sc) { scoreI2T[i * t + j] = v }
                }
                for (j, sel) in t2i {
                    let sc = itmScores(textIdx: Array(repeating: j, count: sel.count), tokens: tokens, imageRow: sel.map { $0 - r.lowerBound })
                    for (i, v) in zip(sel, sc) { scoreT2I[j * n + i] = v }
                }
            }
            if slicing.size > 1 {
                scoreI2T.withUnsafeMutableBufferPointer { slicing.allReduceSum($0.baseAddress!, $0.count) }
                scoreT2I.withUnsafeMutableBufferPointer { slicing.allReduceSum($0.baseAddress!, $0.count) }
            }
            return RetrievalScoreMatrices(imageFeats: keepImageFeatures ? Tensor.concat(feats, axis: 0) : nil, imageEmbeds: imageEmbeds,
                                          textFeats: textFeats, textEmbeds: textEmbeds, sims: sims, scoreI2T: scoreI2T, scoreT2I: scoreT2I,
                                          topI2T: topI2T, topT2I: topT2I, images: n, texts: t, k: kk)
        }
    }

    /// In-memory images `[N, 3, H, W]` (fixtures, tests), one process, image tokens kept.
    public static func compute<M: ALBEFEncoders>(model: M, images: Tensor, ids: [Int32], mask: [Int32], length l: Int, k: Int,
                                                 imageChunk: Int = 64, textChunk: Int = 256) -> RetrievalScoreMatrices {
        let n = images.shape[0], per = images.count / max(n, 1)
        return compute(model: model, imageCount: n, images: { r in
            Tensor(Array(UnsafeBufferPointer(start: images.data + r.lowerBound * per, count: r.count * per)),
                   shape: [r.count] + Array(images.shape.dropFirst()))
        }, ids: ids, mask: mask, length: l, k: k, imageChunk: imageChunk, textChunk: textChunk, keepImageFeatures: true)
    }

    /// Indices of the k largest values, descending (`torch.topk`); equal values in index order.
    public static func topK(_ row: [Float], _ k: Int) -> [Int] {
        Array(row.indices.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }.prefix(k))
    }
}
