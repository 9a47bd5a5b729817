import ALBEF
import Foundation
import NN
import Tensor

/// Selfcheck of kind `albef-retrieval-step`: one training step of ALBEF's retrieval model
/// (`models/model_retrieval.py`) and `Retrieval.py`'s evaluation, against the PyTorch reference.
///
/// Every size comes from the fixture (tensor shapes, `fixture.json`): batch, text length, image
/// resolution, ViT/BERT shapes, E, Q, k_test, the eval set. Steps:
/// 1. the manifest (`fixture.json` → `tensors`) matches the safetensors file (names, shapes, dtypes);
/// 2. the model is built and its state loaded (every state key, nothing missing);
/// 3. evaluation from that state (`RetrievalEvalSelfCheck`): features, `sims_matrix`, the
///    top-k sets and ITM scores of both score matrices, `itm_eval`'s recalls (exactly);
/// 4. the step with the fixture's ITM negatives: losses, every `expected/*` intermediate,
///    every gradient, queues / `idx_queue` / `queue_ptr` (ids exactly), momentum weights, and
///    the parameters after one AdamW step.
/// A name the fixture holds that cannot be produced fails the check.
public enum RetrievalStepSelfCheck {
    public static func run(directory dir: URL, report: SelfCheckReport) throws {
        let json = try readFixtureJSON(dir)
        let file = try SafeTensorsFile(path: dir.appendingPathComponent("fixture.safetensors").path)
        checkManifest(json, file, report: report)

        var (config, _, _, configAlpha) = try FixtureModelConfig.read(json)
        guard let imgShape = file.entries["batch/image"]?.shape, imgShape.count == 4,
              let idsShape = file.entries["batch/input_ids"]?.shape, idsShape.count == 2 else {
            throw SelfCheckError.invalid("fixture.safetensors: needs batch/image [B,3,H,W] and batch/input_ids [B,L]")
        }
        try FixtureModelConfig.applyTensorShapes(file, to: &config)
        let cfg = json["config"] as? [String: Any] ?? [:]
        let retrieval = cfg["retrieval_config"] as? [String: Any] ?? [:]
        let distill = retrieval["distill"] as? Bool ?? true
        let b = idsShape[0], l = idsShape[1]
        let idx = try file.ints("batch/idx").values
        guard idx.count == b, imgShape[0] == b else {
            throw SelfCheckError.invalid("fixture: batch/idx has \(idx.count) ids and batch/image \(imgShape[0]) images for a batch of \(b)")
        }
        guard config.queueSize % b == 0 else {
            throw SelfCheckError.invalid("fixture: queue size \(config.queueSize) is not a multiple of the batch \(b) (model_retrieval asserts it)")
        }
        // α as the reference passed it (a Python float; stored in float64).
        let scalars = json["scalars"] as? [String: Any] ?? [:]
        let alphaPath = dir.appendingPathComponent("fixture.safetensors").path
        let alpha: Double = try file.entries["batch/alpha"].map { _ in try scalarDouble(file, path: alphaPath, key: "batch/alpha") }
            ?? num(scalars["alpha"]) ?? Double(configAlpha)
        let negImage = try file.ints("batch/itm_neg_image_idx").values.map { Int($0) }
        let negText = try file.ints("batch/itm_neg_text_idx").values.map { Int($0) }
        guard negImage.count == b, negText.count == b, (negImage + negText).allSatisfy({ (0..<b).contains($0) }) else {
            throw SelfCheckError.invalid("fixture: batch/itm_neg_*_idx must hold \(b) indices in 0..<\(b), got \(negImage), \(negText)")
        }
        report.note("albef-retrieval-step: B=\(b) L=\(l) image=\(config.imageRes) vit=\(config.visionWidth)x\(config.vitDepth) bert=\(config.bert.hiddenSize)x\(config.bert.numHiddenLayers) fusion@\(config.bert.fusionLayer) V=\(config.bert.vocabSize) E=\(config.embedDim) Q=\(config.queueSize) alpha=\(alpha) distill=\(distill)")

        let model = ALBEFRetrieval(config, distill: distill, seed: 1234)
        model.pack()
        let r = try model.load(from: file, strict: false)
        let unexpected = r.unexpected.filter { !$0.hasPrefix("batch/") && !$0.hasPrefix("expected/") && !$0.hasPrefix("eval/") }
        if !r.missing.isEmpty || !unexpected.isEmpty || !r.shapeMismatches.isEmpty {
            throw SelfCheckError.invalid("fixture state does not match the retrieval model: \(r.summary); unexpected \(unexpected.prefix(5))")
        }
        report.note("loaded \(r.loaded.count) state entries")
        if let pairs = json["momentum_pairs"] as? [[String]] {
            let online = model.trainableParameters().prefix(model.momentumParameters().count).map(\.0)
            let ours = zip(online, model.momentumParameters().map(\.0)).map { [$0, $1] }
            report.record(name: "momentum_pairs: \(pairs.count) (online, momentum) pairs in parameters() order", passed: ours == pairs)
        }

        // Evaluation first: it reads the initial state, which the step changes.
        try RetrievalEvalSelfCheck.run(model: model, json: json, file: file, report: report)

        // The step.
        let opt = cfg["optimizer"] as? [String: Any] ?? retrieval["optimizer"] as? [String: Any] ?? [:]
        let lr = Float(num(opt["lr"]) ?? 1e-5), wd = Float(num(opt["weight_decay"]) ?? 0.02)
        let betas = (opt["betas"] as? [Any])?.compactMap(num) ?? [0.9, 0.999]
        let adam = AdamW(model.online!, lr: lr, weightDecay: wd, beta1: Float(betas[0]), beta2: Float(betas[1]), eps: Float(num(opt["eps"]) ?? 1e-8))
        let tempBefore = model.temp.item
        let ptrBefore = model.queuePtr.value.values.first ?? -1
        let batch = RetrievalBatch(images: try file.tensor("batch/image"), inputIds: try file.ints("batch/input_ids").int32,
                                   attentionMask: try file.ints("batch/attention_mask").int32, imageIds: idx, batchSize: b, length: l)
        var rng = RandomGenerator(seed: 0)
        model.online!.zeroGradients()
        let out = model.forwardStep(batch, alpha: alpha, rng: &rng,
                                    injection: StepInjection(negativeImageIndex: negImage, negativeTextIndex: negText), keepActivations: true)
        out.total.backward()
        model.commitEnqueue()

        // Scalars.
        let lossTol = 1e-4
        let got: [String: Double] = ["loss_ita": Double(out.lossITA.item), "loss_itm": Double(out.lossITM.item), "loss_total": Double(out.total.item),
                                     "loss_i2t": Double(out.diagnostics["loss_i2t"] ?? .nan), "loss_t2i": Double(out.diagnostics["loss_t2i"] ?? .nan)]
        for (k, v) in got.sorted(by: { $0.key < $1.key }) {
            if let ref = num(scalars[k]) { report.compareScalar(k, v, ref, rtol: lossTol) }
        }
        if let ref = num(scalars["temp"]) { report.compareScalar("temp (used, not clamped)", Double(tempBefore), ref, rtol: 1e-7) }
        if let ref = num(scalars["alpha"]) { report.compareScalar("alpha", alpha, ref, rtol: 1e-7) }  // float32-stored α rounds
        if let ref = num(scalars["queue_ptr_before"]) { report.compareExact("queue_ptr_before", [ptrBefore], [Int64(ref)]) }
        if let ref = num(scalars["queue_ptr_after"]) { report.compareExact("queue_ptr_after", model.queuePtr.value.values, [Int64(ref)]) }
        if let ref = num(scalars["itm_accuracy"]) {
            // A row whose two logits (nearly) tie may flip either way: each such row may count differently.
            let logits = out.activations["itm_logits"]?.scalars ?? []
            var ambiguous = 0
            for r in 0..<(logits.count / 2) {
                let a = Double(logits[2 * r]), c = Double(logits[2 * r + 1])
                if abs(a - c) <= 1e-5 * max(abs(a), abs(c)) + 1e-6 { ambiguous += 1 }
            }
            report.compareScalar("itm_accuracy (\(ambiguous) near-tied rows)", Double(out.diagnostics["itm_accuracy"] ?? -1), ref, rtol: 0,
                                 atol: Double(ambiguous) / Double(max(logits.count / 2, 1)) + 1e-7)
        }
        let knownScalars: Set<String> = ["loss_ita", "loss_itm", "loss_total", "loss_i2t", "loss_t2i", "temp", "alpha", "queue_ptr_before",
                                         "queue_ptr_after", "itm_accuracy", "global_grad_norm"]
        for k in scalars.keys.sorted() where !knownScalars.contains(k) { report.note("note: scalar '\(k)' is not compared") }

        // The given negatives must be drawable under our sampling weights.
        if let wI2T = out.activations["itm_weights_i2t"], let wT2I = out.activations["itm_weights_t2i"] {
            let ok = (0..<b).allSatisfy { wT2I.data[$0 * b + negImage[$0]] > 0 && wI2T.data[$0 * b + negText[$0]] > 0 }
            report.record(name: "given ITM negatives have non-zero sampling weight (same-image pairs excluded)", passed: ok)
        }

        // Intermediates.
        for key in file.keys where key.hasPrefix("expected/") && !key.hasPrefix("expected/grad/") && !key.hasPrefix("expected/after") {
            let name = String(key.dropFirst("expected/".count))
            if name == "idx_all" {
                report.compareExact("act/idx_all", out.idxAll, try file.ints(key).values)
                continue
            }
            guard let t = out.activations[name] else { report.record(name: "act/\(name) (no such activation to compare)", passed: false); continue }
            report.compare("act/\(name)", t.scalars, try file.floats(key), atol: 1e-5, rtol: 2e-4)
        }

        // Gradients: every full tensor, every norm, the global norm, and the parameters without one.
        let params = Dictionary(model.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        var refGrads: [String: [Float]] = [:]
        for key in file.keys where key.hasPrefix("expected/grad/") {
            let name = String(key.dropFirst("expected/grad/".count))
            let ref = try file.floats(key)
            refGrads[name] = ref
            guard let p = params[name], let g = p.grad else { report.record(name: "grad/\(name) (no such parameter or no gradient)", passed: false); continue }
            report.compare("grad/\(name)", g.scalars, ref, atol: 1e-6, rtol: 1e-3)
        }
        if let norms = (json["grad_norms"] ?? json["grad_norms_all"]) as? [String: Any] {
            var worst = (0.0, ""), maxAbs = 0.0
            for (name, v) in norms {
                guard let ref = num(v) else { continue }
                guard let p = params[name], let g = p.grad else { worst = (.infinity, name + " (no such parameter)"); continue }
                let n = l2Norm(g)
                maxAbs = max(maxAbs, abs(n - ref))
                let score = abs(n - ref) / (1e-3 * ref + 1e-7)
                if score > worst.0 { worst = (score, name) }
            }
            report.add(Comparison(name: "grad-norms (\(norms.count) tensors, |n − ref| / (1e-3·ref + 1e-7); worst \(worst.1))",
                                  maxAbs: maxAbs, maxRel: worst.0, measure: worst.0, tolerance: 1))
        }
        if let ref = num(scalars["global_grad_norm"]) {
            report.compareScalar("global_grad_norm", model.online!.gradientNormSquared().squareRoot(), ref, rtol: 1e-4)
        }
        if let none = json["params_without_grad"] as? [String] {
            let bad = none.filter { name in params[name]?.grad.map { g in g.scalars.contains { $0 != 0 } } ?? false }
            report.record(name: "params_without_grad (\(none.count)) get no gradient\(bad.isEmpty ? "" : ": \(bad.prefix(3))")", passed: bad.isEmpty)
        }

        // Buffers and momentum weights after the step.
        for key in file.keys where key.hasPrefix("expected/after/") {
            let name = String(key.dropFirst("expected/after/".count))
            switch name {
            case "queue_ptr": report.compareExact("after/queue_ptr", model.queuePtr.value.values, try file.ints(key).values)
            case "idx_queue": report.compareExact("after/idx_queue", model.idxQueue.value.values, try file.ints(key).values)
            case "image_queue": report.compare("after/image_queue", model.imageQueue.scalars, try file.floats(key), atol: 1e-5, rtol: 1e-4)
            case "text_queue": report.compare("after/text_queue", model.textQueue.scalars, try file.floats(key), atol: 1e-5, rtol: 1e-4)
            default:
                guard let p = params[name] else { report.record(name: "after/\(name) (no such parameter or buffer)", passed: false); continue }
                report.compare("after/\(name)", p.scalars, try file.floats(key), atol: 1e-6, rtol: 1e-5)
            }
        }

        // One AdamW step (step 1 from a fresh state), elements with near-eps gradients allowed
        // the movement their gradient difference explains (`AdamWFirstStepAllowance`).
        var allowance: [String: [Double]] = [:]
        for (name, ref) in refGrads {
            guard let g = params[name]?.grad, g.count == ref.count else { continue }
            allowance[name] = AdamWFirstStepAllowance.perElement(lr: Double(adam.lr), eps: Double(adam.eps), gradient: g.scalars, reference: ref)
        }
        adam.update()
        for key in file.keys where key.hasPrefix("expected/after_adamw/") {
            let name = String(key.dropFirst("expected/after_adamw/".count))
            guard let p = params[name] else { report.record(name: "after_adamw/\(name) (no such parameter)", passed: false); continue }
            let ref = try file.floats(key)
            report.compare("after_adamw/\(name)", p.scalars, ref, allowance: allowance[name] ?? [Double](repeating: 0, count: ref.count),
                           atol: 1e-6, rtol: 1e-5)
        }
    }

    /// A one-element tensor as a Double: float64 read exactly from the stored bytes, other dtypes converted.
    static func scalarDouble(_ file: SafeTensorsFile, path: String, key: String) throws -> Double {
        guard let info = file.entries[key], info.shape.reduce(1, *) == 1 else {
            throw SelfCheckError.invalid("fixture.safetensors: \(key) must hold one value")
        }
        guard info.dtype == "F64" else { return Double(try file.floats(key)[0]) }
        let bytes = try RawSafeTensors(path: path).bytes(info)
        var bits: UInt64 = 0
        for (i, byte) in bytes.prefix(8).enumerated() { bits |= UInt64(byte) << (8 * UInt64(i)) }
        return Double(bitPattern: bits)
    }

    /// Every tensor of the manifest is in the file with its shape and dtype, and vice versa.
    static func checkManifest(_ json: [String: Any], _ file: SafeTensorsFile, report: SelfCheckReport) {
        guard let manifest = json["tensors"] as? [String: Any] else {
            report.record(name: "manifest: fixture.json has no 'tensors'", passed: false)
            return
        }
        let dtypes = ["float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
                      "int8": "I8", "uint8": "U8", "bool": "BOOL"]
        var bad: [String] = []
        for (name, v) in manifest.sorted(by: { $0.key < $1.key }) {
            let m = v as? [String: Any] ?? [:]
            guard let e = file.entries[name] else { bad.append("\(name): not in the file"); continue }
            let shape = (m["shape"] as? [Any])?.compactMap(num).map { Int($0) }
            let dtype = (m["dtype"] as? String).map { dtypes[$0] ?? $0 }
            if shape != e.shape { bad.append("\(name): shape \(e.shape) vs manifest \(shape ?? [])") }
            if dtype != e.dtype { bad.append("\(name): dtype \(e.dtype) vs manifest \(dtype ?? "?")") }
        }
        for name in file.keys where manifest[name] == nil { bad.append("\(name): not in the manifest") }
        for x in bad.prefix(5) { report.note("  manifest: \(x)") }
        report.record(name: "manifest: \(manifest.count) tensors with their shapes and dtypes", passed: bad.isEmpty)
    }
}
