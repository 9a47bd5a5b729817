/// `Retrieval.py`'s `itm_eval`: recall at 1/5/10 of the score matrices, both directions.
///
///     TR rank(i) = min over the captions c of image i of the position of c in score_i2t[i] sorted descending
///     IR rank(t) = position of txt2img[t] in score_t2i[t] sorted descending
///     R@K = 100·#(rank < K)/count,  x_r_mean = (R@1 + R@5 + R@10)/3,  r_mean = (txt_r_mean + img_r_mean)/2
///
/// Ties never count in the target's favour: a position is the number of entries scored higher
/// than the best target plus the non-target entries scored equal to it (numpy's reversed
/// `argsort` orders ties arbitrarily, e.g. the −100 entries outside the top k; this is the
/// worst order, so with k_test < 10 an unscored target is no R@10 hit by luck).
/// JSON keys are the reference's (`txt_r1`, ..., `r_mean`).
public struct RetrievalRecall: Codable, Equatable, Sendable {
    public var txtR1: Double, txtR5: Double, txtR10: Double, txtRMean: Double
    public var imgR1: Double, imgR5: Double, imgR10: Double, imgRMean: Double
    public var rMean: Double

    enum CodingKeys: String, CodingKey {
        case txtR1 = "txt_r1", txtR5 = "txt_r5", txtR10 = "txt_r10", txtRMean = "txt_r_mean"
        case imgR1 = "img_r1", imgR5 = "img_r5", imgR10 = "img_r10", imgRMean = "img_r_mean", rMean = "r_mean"
    }

    /// The values by their reference names.
    public var byName: [(String, Double)] {
        [("txt_r1", txtR1), ("txt_r5", txtR5), ("txt_r10", txtR10), ("txt_r_mean", txtRMean),
         ("img_r1", imgR1), ("img_r5", imgR5), ("img_r10", imgR10), ("img_r_mean", imgRMean), ("r_mean", rMean)]
    }

    /// - Parameters:
    ///   - scoreI2T: `[N, T]` row-major; scoreT2I: `[T, N]` row-major.
    ///   - imageToTexts: the ground-truth captions of each image (`img2txt`).
    ///   - textToImage: the ground-truth image of each caption (`txt2img`).
    public init(scoreI2T: [Float], scoreT2I: [Float], imageToTexts: [[Int]], textToImage: [Int]) {
        let n = imageToTexts.count, t = textToImage.count
        precondition(scoreI2T.count == n * t && scoreT2I.count == t * n, "RetrievalRecall: score matrices must be [\(n), \(t)] and [\(t), \(n)]")
        let tr = (0..<n).map { i in RetrievalRecall.rank(Array(scoreI2T[(i * t)..<((i + 1) * t)]), of: imageToTexts[i]) }
        let ir = (0..<t).map { j in RetrievalRecall.rank(Array(scoreT2I[(j * n)..<((j + 1) * n)]), of: [textToImage[j]]) }
        func recall(_ r: [Int], _ k: Int) -> Double { 100.0 * Double(r.filter { $0 < k }.count) / Double(r.count) }
        txtR1 = recall(tr, 1); txtR5 = recall(tr, 5); txtR10 = recall(tr, 10)
        imgR1 = recall(ir, 1); imgR5 = recall(ir, 5); imgR10 = recall(ir, 10)
        txtRMean = (txtR1 + txtR5 + txtR10) / 3
        imgRMean = (imgR1 + imgR5 + imgR10) / 3
        rMean = (txtRMean + imgRMean) / 2
    }

    /// Best position of any of `targets` in `row` sorted descending, equal non-targets first;
    /// `Int.max` without targets (the reference's 1e20: never a hit).
    public static func rank(_ row: [Float], of targets: [Int]) -> Int {
        guard let best = targets.map({ row[$0] }).max() else { return Int.max }
        let isTarget = Set(targets)
        return row.indices.filter { row[$0] > best || (row[$0] == best && !isTarget.contains($0)) }.count
    }
}
