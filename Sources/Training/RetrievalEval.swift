import ALBEF
import Foundation
import NN
import Tensor

/// Zero-shot image–text retrieval as ALBEF's `Retrieval.py` evaluates it (spec §8): ITC cosine
/// similarities rank all pairs; the top k of each row are re-ranked by the ITM head's
/// class-1 logit (others get −100); text→image and image→text R@1/5/10.
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
    /// - Parameters:
    ///   - images: normalised eval images `[N, 3, H, W]` (processed in chunks).
    ///   - ids/mask: tokenized captions `[T, L]` (padded to a common L).
    ///   - textToImage: the ground-truth image of each caption.
    /// How re-ranked candidates are scored: ALBEF's ITM logit alone (`Retrieval.py`), or LAVIS's
    /// ITM logit + ITC cosine (`compute_sim_matrix`).
    public enum Scoring: String, Sendable, CaseIterable { case itm, itmPlusITC = "itm+itc" }

    public static func evaluate(model: ALBEFPretrain, images: Tensor, ids: [Int32], mask: [Int32], length l: Int,
                                textToImage: [Int], k: Int, scoring: Scoring = .itm, chunk: Int = 64) -> RetrievalResult {
        model.train(false)
        defer { model.train(true) }
        return withNoGrad {
            let n = images.shape[0], t = textToImage.count
            let per = images.count / max(n, 1)
            // Image side: tokens and embeddings.
            var imageTokens: [Tensor] = []
            var imageEmb = [Float]()
            var s = 0
            while s < n {
                let e = min(n, s + chunk)
                let x = Tensor(Array(UnsafeBufferPointer(start: images.data + s * per, count: (e - s) * per)), shape: [e - s] + Array(images.shape.dropFirst()))
                let tok = model.visualEncoder(x)
                imageTokens.append(tok)
                imageEmb += model.visionProj(tok.select(axis: 1, 0)).l2Normalized().scalars
                s = e
            }
            let imgTok = Tensor.concat(imageTokens, axis: 0)  // [N, P, C]
            // Text side.
            var textHidden: [Tensor] = []
            var textEmb = [Float]()
            s = 0
            while s < t {
                let e = min(t, s + chunk * 4)
                let idc = Array(ids[(s * l)..<(e * l)]), mc = Array(mask[(s * l)..<(e * l)])
                let h = model.textEncoder.bert(ids: idc, attentionMask: mc, batch: e - s, length: l, mode: .text)
                textHidden.append(h)
                textEmb += model.textProj(h.select(axis: 1, 0)).l2Normalized().scalars
                s = e
            }
            let txtH = Tensor.concat(textHidden, axis: 0)  // [T, L, C]
            let d = model.config.embedDim
            let sim = Tensor(imageEmb, shape: [n, d]).matmul(Tensor(textEmb, shape: [t, d]), transposeB: true)  // [N, T]
            let kk = min(k, n, t)
            func itmScores(textIdx: [Int], imageIdx: [Int]) -> [Float] {
                let hs = txtH.gatherRows(textIdx)
                var m = [Int32]()
                for j in textIdx { m += mask[(j * l)..<((j + 1) * l)] }
                let out = model.textEncoder.bert(hidden: hs, attentionMask: m, batch: textIdx.count, length: l,
                                                 image: imgTok.gatherRows(imageIdx), mode: .fusion)
                let logits = model.itmHead(out.select(axis: 1, 0))
                return (0..<textIdx.count).map { logits.data[$0 * 2 + 1] }
            }
            func topK(_ row: [Float], _ k: Int) -> [Int] {
                Array(row.indices.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }.prefix(k))
            }
            var scoreI2T = [[Float]](repeating: [Float](repeating: -100, count: t), count: n)
            var scoreT2I = [[Float]](repeating: [Float](repeating: -100, count: n), count: t)
            var itcI2T = [[Float]](), itcT2I = [[Float]]()
            for i in 0..<n {
                let row = Array(UnsafeBufferPointer(start: sim.data + i * t, count: t))
                itcI2T.append(row)
                let top = topK(row, kk)
                let sc = itmScores(textIdx: top, imageIdx: Array(repeating: i, count: kk))
                for (j, v) in zip(top, sc) { scoreI2T[i][j] = scoring == .itm ? v : v + row[j] }
            }
            for j in 0..<t {
                let col = (0..<n).map { sim.data[$0 * t + j] }
                itcT2I.append(col)
                let top = topK(col, kk)
                let sc = itmScores(textIdx: Array(repeating: j, count: kk), imageIdx: top)
                for (i, v) in zip(top, sc) { scoreT2I[j][i] = scoring == .itm ? v : v + col[i] }
            }
            var imageTexts = [[Int]](repeating: [], count: n)
            for (j, i) in textToImage.enumerated() { imageTexts[i].append(j) }
            func rank(_ row: [Float], of targets: [Int]) -> Int {
                let order = row.indices.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }
                var pos = [Int](repeating: 0, count: row.count)
                for (p, idx) in order.enumerated() { pos[idx] = p }
                return targets.map { pos[$0] }.min() ?? row.count
            }
            let tr = (0..<n).map { rank(scoreI2T[$0], of: imageTexts[$0]) }
            let ir = (0..<t).map { rank(scoreT2I[$0], of: [textToImage[$0]]) }
            let trITC = (0..<n).map { rank(itcI2T[$0], of: imageTexts[$0]) }
            let irITC = (0..<t).map { rank(itcT2I[$0], of: [textToImage[$0]]) }
            func recall(_ r: [Int], _ kk: Int) -> Double { 100 * Double(r.filter { $0 < kk }.count) / Double(max(r.count, 1)) }
            return RetrievalResult(images: n, texts: t, k: kk, txtR1: recall(tr, 1), txtR5: recall(tr, 5), txtR10: recall(tr, 10),
                                   imgR1: recall(ir, 1), imgR5: recall(ir, 5), imgR10: recall(ir, 10),
                                   itcImgR1: recall(irITC, 1), itcTxtR1: recall(trITC, 1))
        }
    }
}
