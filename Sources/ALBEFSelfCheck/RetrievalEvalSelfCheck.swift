import ALBEF
import Foundation
import NN
import Tensor

/// The evaluation half of kind `albef-retrieval-step`: `Retrieval.py`'s `evaluation` and
/// `itm_eval` on the fixture's eval set (`eval/images`, `eval/input_ids`,
/// `eval/attention_mask`; `fixture.json` → `eval`: `k_test`, `img2txt`, `txt2img`, `itm_eval`).
///
/// Compared: the features and embeddings, `sims_matrix`; per row of each score matrix, the
/// top-k set exactly (which entries are −100) and the ITM scores on it; the recalls exactly.
enum RetrievalEvalSelfCheck {
    static let inputs: Set<String> = ["images", "input_ids", "attention_mask"]

    static func run(model: ALBEFRetrieval, json: [String: Any], file: SafeTensorsFile, report: SelfCheckReport) throws {
        guard file.entries["eval/images"] != nil else {
            if file.keys.contains(where: { $0.hasPrefix("eval/") }) || json["eval"] != nil {
                report.record(name: "eval (eval/images missing)", passed: false)
            }
            return
        }
        let ev = json["eval"] as? [String: Any] ?? [:]
        let retrieval = (json["config"] as? [String: Any])?["retrieval_config"] as? [String: Any] ?? [:]
        guard let k = (num(ev["k_test"]) ?? num(retrieval["k_test"])).map({ Int($0) }), k > 0 else {
            throw SelfCheckError.invalid("fixture.json: eval.k_test (or config.retrieval_config.k_test) missing")
        }
        let images = try file.tensor("eval/images")
        let ids = try file.ints("eval/input_ids"), mask = try file.ints("eval/attention_mask")
        guard ids.shape.count == 2, mask.shape == ids.shape, images.shape.count == 4 else {
            throw SelfCheckError.invalid("fixture: eval/input_ids and eval/attention_mask must be [T, L], eval/images [N, 3, H, W]")
        }
        let n = images.shape[0], t = ids.shape[0], l = ids.shape[1]
        guard k <= n, k <= t else { throw SelfCheckError.invalid("fixture: k_test \(k) exceeds the eval set (\(n) images, \(t) texts)") }
        let chunk = num(ev["batch_size_test"]).map { Int($0) } ?? num(retrieval["batch_size_test"]).map { Int($0) } ?? 64
        report.note("eval: \(n) images, \(t) captions of length \(l), k_test \(k)")

        let s = RetrievalScoreMatrices.compute(model: model, images: images, ids: ids.int32, mask: mask.int32, length: l, k: k,
                                               imageChunk: chunk)
        for key in file.keys where key.hasPrefix("eval/") {
            let name = String(key.dropFirst("eval/".count))
            if inputs.contains(name) { continue }
            let ref = try file.floats(key)
            switch name {
            case "image_feats": report.compare("eval/image_feats", s.imageFeats?.scalars ?? [], ref, atol: 1e-5, rtol: 2e-4)
            case "image_embeds": report.compare("eval/image_embeds", s.imageEmbeds.scalars, ref, atol: 1e-5, rtol: 2e-4)
            case "text_feats": report.compare("eval/text_feats", s.textFeats.scalars, ref, atol: 1e-5, rtol: 2e-4)
            case "text_embeds": report.compare("eval/text_embeds", s.textEmbeds.scalars, ref, atol: 1e-5, rtol: 2e-4)
            case "sims_matrix": report.compare("eval/sims_matrix", s.sims.scalars, ref, atol: 1e-5, rtol: 2e-4)
            case "score_matrix_i2t": compareScores("score_matrix_i2t", s.scoreI2T, ref, rows: n, report: report)
            case "score_matrix_t2i": compareScores("score_matrix_t2i", s.scoreT2I, ref, rows: t, report: report)
            default: report.record(name: "eval/\(name) (no such quantity to produce)", passed: false)
            }
        }

        // itm_eval on our score matrices.
        guard let want = ev["itm_eval"] as? [String: Any] else { return }
        let txt2imgJSON = ev["txt2img"] as? [String: Any] ?? [:], img2txtJSON = ev["img2txt"] as? [String: Any] ?? [:]
        let textToImage = try (0..<t).map { j -> Int in
            guard let v = num(txt2imgJSON[String(j)]) else { throw SelfCheckError.invalid("fixture.json: eval.txt2img has no caption \(j)") }
            return Int(v)
        }
        let imageToTexts = (0..<n).map { i in ((img2txtJSON[String(i)] as? [Any]) ?? []).compactMap(num).map { Int($0) } }
        guard textToImage.allSatisfy({ (0..<n).contains($0) }), imageToTexts.joined().allSatisfy({ (0..<t).contains($0) }) else {
            throw SelfCheckError.invalid("fixture.json: eval.txt2img/img2txt index outside \(n) images / \(t) captions")
        }
        let recall = RetrievalRecall(scoreI2T: s.scoreI2T, scoreT2I: s.scoreT2I, imageToTexts: imageToTexts, textToImage: textToImage)
        let got = Dictionary(uniqueKeysWithValues: recall.byName)
        for (name, v) in want.sorted(by: { $0.key < $1.key }) {
            guard let ref = num(v) else { continue }
            guard let mine = got[name] else { report.record(name: "itm_eval/\(name) (no such metric)", passed: false); continue }
            report.compareScalar("itm_eval/\(name)", mine, ref, rtol: 0, atol: 1e-9)
        }
    }

    /// Which entries of each row are scored (not −100) must agree exactly; the scores there
    /// within the activation tolerance.
    static func compareScores(_ name: String, _ got: [Float], _ ref: [Float], rows: Int, report: SelfCheckReport) {
        guard got.count == ref.count else {
            report.record(name: "eval/\(name) (size \(got.count) vs \(ref.count))", passed: false)
            return
        }
        let unscored = RetrievalScoreMatrices.unscored
        let cols = ref.count / max(rows, 1)
        let setsGot = got.map { $0 != unscored }, setsRef = ref.map { $0 != unscored }
        var badRows: [Int] = []
        for r in 0..<rows where setsGot[(r * cols)..<((r + 1) * cols)] != setsRef[(r * cols)..<((r + 1) * cols)] { badRows.append(r) }
        if !badRows.isEmpty { report.note("  \(name): top-k sets differ in rows \(badRows.prefix(10))") }
        report.record(name: "eval/\(name) top-k sets (\(rows) rows; -100 exactly outside)", passed: badRows.isEmpty)
        let scored = ref.indices.filter { setsRef[$0] && setsGot[$0] }
        report.compare("eval/\(name) scores on the top-k", scored.map { got[$0] }, scored.map { ref[$0] }, atol: 1e-5, rtol: 2e-4)
    }
}
