import ALBEF
import NN
import Tensor

extension TrainConfig {
    /// Applies `bf16_fp32_weight_grads` to `model`: every parameter whose state_dict key is one of
    /// the names or lies under one (`text_encoder` covers `text_encoder.bert.encoder.layer.0.…`)
    /// gets `weightGradFP32`, every other one loses it. In bf16 mode a linear layer with such a
    /// weight runs its weight-gradient GEMM in fp32 (`linearBackward`, cblas_sgemm) and its other
    /// two GEMMs in bf16; in fp32 mode the flag changes nothing.
    ///
    /// Returns the names that matched, with how many weight matrices (2-D parameters) each
    /// covers. An entry set in the file that matches no parameter is an error naming it and the
    /// model's top-level modules; the default's entries apply where the model has them.
    @discardableResult
    public func applyBF16WeightGradPolicy(to model: Module) throws -> [(name: String, matrices: Int)] {
        let params = model.namedParameters()
        func covers(_ name: String, _ key: String) -> Bool { key == name || key.hasPrefix(name + ".") }
        var matched: [(name: String, matrices: Int)] = []
        for name in bf16FP32WeightGrads {
            let hits = params.filter { covers(name, $0.0) }
            if hits.isEmpty {
                guard !explicitBF16FP32WeightGrads else {
                    var tops: [String] = []
                    for (k, _) in params { let t = String(k.prefix { $0 != "." }); if !tops.contains(t) { tops.append(t) } }
                    throw ConfigError.invalid(key: "bf16_fp32_weight_grads",
                                              message: "'\(name)' names no parameter of the model; use state_dict module names such as \(tops.joined(separator: ", ")) (or a path below one, e.g. text_encoder.bert.encoder.layer.0)",
                                              file: path)
                }
                continue
            }
            matched.append((name, Set(hits.filter { $0.1.shape.count == 2 }.map { ObjectIdentifier($0.1) }).count))
        }
        // A tied weight (word_embeddings = the MLM decoder) has several keys: covered by any.
        let covered = Set(params.filter { p in bf16FP32WeightGrads.contains { covers($0, p.0) } }.map { ObjectIdentifier($0.1) })
        for (_, t) in params { t.weightGradFP32 = covered.contains(ObjectIdentifier(t)) }
        return matched
    }
}
