import ALBEF
import DataPipeline
import Distributed
import Foundation
import NN
import Tensor

/// Zero-shot image–text retrieval as `eval` prints it: `Retrieval.py`'s recalls (the one scorer,
/// ``RetrievalScoreMatrices``, and `itm_eval`'s ranks, ``RetrievalRecall``: ties never count in
/// the target's favour) plus the ITC-only R@1 and the chance level.
public struct RetrievalResult: Codable, Sendable {
    public var images: Int, texts: Int, k: Int
    public var txtR1: Double, txtR5: Double, txtR10: Double
    public var imgR1: Double, imgR5: Double, imgR10: Double
    /// ITC-only ranks (no ITM re-ranking), for comparison.
    public var itcImgR1: Double, itcTxtR1: Double
    public var rMean: Double { (txtR1 + txtR5 + txtR10 + imgR1 + imgR5 + imgR10) / 6 }
    /// R@1 of a random ranking: 1/images for text→image, captions-per-image/texts for image→text.
    public var chanceImgR1: Double { 100 / Double(images) }
    public var chanceTxtR1: Double { 100 * Double(texts) / Double(images) / Double(texts) }
}

public enum RetrievalEvaluator {
    /// How re-ranked candidates are scored: ALBEF's ITM logit alone (`Retrieval.py`), or LAVIS's
    /// ITM logit + ITC cosine (`compute_sim_matrix`).
    public enum Scoring: String, Sendable, CaseIterable { case itm, itmPlusITC = "itm+itc" }

    /// The recalls of score matrices (`itm+itc`: the ITC cosine added on the re-ranked entries).
    public static func result(_ s: RetrievalScoreMatrices, imageToTexts: [[Int]], textToImage: [Int], scoring: Scoring = .itm) -> RetrievalResult {
        let n = s.images, t = s.texts
        var i2t = s.scoreI2T, t2i = s.scoreT2I
        if scoring == .itmPlusITC {
            for i in 0..<n { for j in 0..<t where i2t[i * t + j] != RetrievalScoreMatrices.unscored { i2t[i * t + j] += s.sims.data[i * t + j] } }
            for j in 0..<t { for i in 0..<n where t2i[j * n + i] != RetrievalScoreMatrices.unscored { t2i[j * n + i] += s.sims.data[i * t + j] } }
        }
        let r = RetrievalRecall(scoreI2T: i2t, scoreT2I: t2i, imageToTexts: imageToTexts, textToImage: textToImage)
        let itcI2T = Array(UnsafeBufferPointer(start: s.sims.data, count: n * t))
        var itcT2I = [Float](repeating: 0, count: t * n)
        for i in 0..<n { for j in 0..<t { itcT2I[j * n + i] = itcI2T[i * t + j] } }
        let itc = RetrievalRecall(scoreI2T: itcI2T, scoreT2I: itcT2I, imageToTexts: imageToTexts, textToImage: textToImage)
        return RetrievalResult(images: n, texts: t, k: s.k, txtR1: r.txtR1, txtR5: r.txtR5, txtR10: r.txtR10,
                               imgR1: r.imgR1, imgR5: r.imgR5, imgR10: r.imgR10, itcImgR1: itc.imgR1, itcTxtR1: itc.txtR1)
    }

    /// - Parameters:
    ///   - images: normalised eval images `[N, 3, H, W]` (processed in chunks).
    ///   - ids/mask: tokenized captions `[T, L]` (padded to a common L).
    ///   - textToImage: the ground-truth image of each caption.
    public static func evaluate<M: ALBEFEncoders>(model: M, images: Tensor, ids: [Int32], mask: [Int32], length l: Int,
                                                  textToImage: [Int], k: Int, scoring: Scoring = .itm, chunk: Int = 64) -> RetrievalResult {
        let s = RetrievalScoreMatrices.compute(model: model, images: images, ids: ids, mask: mask, length: l, k: k, imageChunk: chunk)
        var imageTexts = [[Int]](repeating: [], count: s.images)
        for (j, i) in textToImage.enumerated() { imageTexts[i].append(j) }
        return result(s, imageToTexts: imageTexts, textToImage: textToImage, scoring: scoring)
    }
}

/// One evaluation of a `re_eval_dataset` split (`[{"image", "caption": [str]}]`, images under
/// `image_root`), rank-sliced over `comm` as `Retrieval.py` under `mpirun`, images decoded and
/// encoded chunk by chunk (``RetrievalScoreMatrices``). Every rank returns the same numbers.
public struct RetrievalSplitEvaluation {
    public var scores: RetrievalScoreMatrices
    public var set: RetrievalEvalSet
    public var seconds: Double
    /// `itm_eval`'s dict.
    public var recall: RetrievalRecall {
        RetrievalRecall(scoreI2T: scores.scoreI2T, scoreT2I: scores.scoreT2I, imageToTexts: set.imageToTexts, textToImage: set.textToImage)
    }
    public func result(scoring: RetrievalEvaluator.Scoring = .itm) -> RetrievalResult {
        RetrievalEvaluator.result(scores, imageToTexts: set.imageToTexts, textToImage: set.textToImage, scoring: scoring)
    }

    /// - Parameters:
    ///   - maxTextLength: tokens per caption (the reference: 30); captions `pre_caption`'d to 30 words.
    ///   - imageChunk: images per chunk (`batch_size_test`).
    public static func run<M: ALBEFEncoders>(model: M, annotation: String, imageRoot: String?, imageSize: Int, tokenizer: BertTokenizer,
                                             k: Int, imageChunk: Int = 64, maxTextLength: Int = 30,
                                             comm: Communicator? = nil) throws -> RetrievalSplitEvaluation {
        let t0 = monotonicSeconds()
        let set = try RetrievalEvalSet.load(annotation: URL(fileURLWithPath: annotation), imageRoot: imageRoot, imageSize: imageSize,
                                            tokenizer: tokenizer, maxTextLength: maxTextLength, decodeImages: false)
        var slicing = RetrievalScoreMatrices.Slicing.single
        if let comm, comm.size > 1 {
            slicing = .init(rank: comm.rank, size: comm.size, allReduceSum: { comm.allReduceSum($0, count: $1) })
        }
        let size = set.imageSize
        let scores = try RetrievalScoreMatrices.compute(model: model, imageCount: set.imageCount, images: { r in
            Tensor(try set.decodeImages(r), shape: [r.count, 3, size, size])
        }, ids: set.texts.inputIds, mask: set.texts.attentionMask, length: set.texts.length, k: k, imageChunk: imageChunk, slicing: slicing)
        return RetrievalSplitEvaluation(scores: scores, set: set, seconds: monotonicSeconds() - t0)
    }
}
