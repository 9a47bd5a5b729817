import ALBEF
import Foundation
import NN
import Tensor

/// Selfcheck of kind `albef-pretrain-step`: one full ALBEF step against the PyTorch reference.
///
/// Builds the model from the fixture's config, loads its state (strict), replays the fixture's
/// ITM negatives and MLM mask, runs forward, backward and one AdamW step, and compares the
/// losses, activations, every gradient, the momentum weights and queues after the step, and
/// the parameters after AdamW.
public enum PretrainStepSelfCheck {
    /// Builds the model config from `fixture.json` (`FixtureModelConfig.read`).
    public static func modelConfig(_ json: [String: Any]) throws -> (ALBEFModelConfig, batch: Int, length: Int, alpha: Float) {
        try FixtureModelConfig.read(json)
    }

    public static func run(directory dir: URL, report: SelfCheckReport) throws {
        let json = try readFixtureJSON(dir)
        let file = try SafeTensorsFile(path: dir.appendingPathComponent("fixture.safetensors").path)
        var (config, _, _, alpha) = try modelConfig(json)
        // Shapes come from the tensors themselves (the config may omit them).
        let imgShape = file.entries["batch/image"]?.shape ?? []
        guard imgShape.count == 4, let idsShape = file.entries["batch/input_ids"]?.shape, idsShape.count == 2 else {
            throw SelfCheckError.invalid("fixture.safetensors: needs batch/image [B,3,H,W] and batch/input_ids [B,L]")
        }
        try FixtureModelConfig.applyTensorShapes(file, to: &config)
        let b = idsShape[0], l = idsShape[1]
        report.note("albef-pretrain-step: B=\(b) L=\(l) image=\(config.imageRes) vit=\(config.visionWidth)x\(config.vitDepth) bert=\(config.bert.hiddenSize)x\(config.bert.numHiddenLayers) fusion@\(config.bert.fusionLayer) V=\(config.bert.vocabSize) E=\(config.embedDim) Q=\(config.queueSize) alpha=\(alpha)")

        let model = ALBEFPretrain(config, seed: 1234)
        model.pack()
        let r = try model.load(from: file, strict: false)
        let unexpected = r.unexpected.filter { !$0.hasPrefix("batch/") && !$0.hasPrefix("expected/") }
        if !r.missing.isEmpty || !unexpected.isEmpty || !r.shapeMismatches.isEmpty {
            throw SelfCheckError.invalid("fixture state does not match the model: \(r.summary); unexpected model-side \(unexpected.prefix(5))")
        }
        report.note("loaded \(r.loaded.count) state entries (\(r.tiedFilled.count) tied aliases filled from their partner)")

        let opt = json["config"].flatMap { ($0 as? [String: Any])?["optimizer"] as? [String: Any] } ?? [:]
        let lr = Float(num(opt["lr"]) ?? 1e-4), wd = Float(num(opt["weight_decay"]) ?? 0.02)
        let betas = (opt["betas"] as? [Any])?.compactMap(num) ?? [0.9, 0.999]
        let adam = AdamW(model.online!, lr: lr, weightDecay: wd, beta1: Float(betas[0]), beta2: Float(betas[1]), eps: Float(num(opt["eps"]) ?? 1e-8))

        let batch = PretrainBatch(images: try file.tensor("batch/image"), inputIds: try file.ints("batch/input_ids").int32,
                                  attentionMask: try file.ints("batch/attention_mask").int32, batchSize: b, length: l)
        let inj = StepInjection(negativeImageIndex: try file.ints("batch/itm_neg_image_idx").values.map { Int($0) },
                                negativeTextIndex: try file.ints("batch/itm_neg_text_idx").values.map { Int($0) },
                                mlmInputIds: try file.ints("batch/mlm_input_ids").int32,
                                mlmLabels: try file.ints("batch/mlm_labels").int32)
        var rng = RandomGenerator(seed: 0)
        model.online!.zeroGradients()
        let out = model.forwardStep(batch, alpha: alpha, rng: &rng, injection: inj, keepActivations: true)
        out.total.backward()
        model.commitEnqueue()

        // Losses and diagnostics.
        let scalars = json["scalars"] as? [String: Any] ?? [:]
        let lossTol = 1e-4
        for (k, v) in [("loss_ita", out.lossITA.item), ("loss_itm", out.lossITM.item), ("loss_mlm", out.lossMLM.item), ("loss_total", out.total.item)] {
            if let ref = num(scalars[k]) { report.compareScalar(k, Double(v), ref, rtol: lossTol) }
        }
        for (k, v) in out.diagnostics where ["loss_i2t", "loss_t2i", "loss_mlm_ce", "loss_mlm_distill"].contains(k) {
            if let ref = num(scalars[k]) { report.compareScalar(k, Double(v), ref, rtol: lossTol) }
        }
        if let ref = num(scalars["num_masked_tokens"]) { report.compareScalar("num_masked_tokens", Double(out.diagnostics["num_masked_tokens"] ?? -1), ref, rtol: 0) }

        // Activations.
        for key in file.keys where key.hasPrefix("expected/") && !key.hasPrefix("expected/grad/") && !key.hasPrefix("expected/after") {
            let name = String(key.dropFirst("expected/".count))
            guard let t = out.activations[name] else { report.record(name: "act/\(name) (no such activation to compare)", passed: false); continue }
            report.compare("act/\(name)", t.scalars, try file.floats(key), atol: 1e-5, rtol: 2e-4)
        }

        // Gradients: every full tensor given, and the norm of every trainable parameter.
        let params = Dictionary(model.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        for key in file.keys where key.hasPrefix("expected/grad/") {
            let name = String(key.dropFirst("expected/grad/".count))
            guard let p = params[name], let g = p.grad else { report.compareScalar("grad/\(name) missing", .infinity, 0, rtol: 0); continue }
            report.compare("grad/\(name)", g.scalars, try file.floats(key), atol: 1e-6, rtol: 1e-3)
        }
        if let norms = json["grad_norms_all"] as? [String: Any] {
            var worst = (0.0, ""), maxAbs = 0.0
            for (name, v) in norms {
                guard let ref = num(v) else { continue }
                guard let p = params[name], let g = p.grad else { worst = (.infinity, name); continue }
                let n = l2Norm(g)
                let rel = abs(n - ref) / max(ref, 1e-6)
                maxAbs = max(maxAbs, abs(n - ref))
                if rel > worst.0 { worst = (rel, name) }
            }
            let c = Comparison(name: "grad-norms (\(norms.count) tensors, worst \(worst.1))", maxAbs: maxAbs, maxRel: worst.0, measure: worst.0, tolerance: 1e-3)
            report.add(c)
        }
        if let ref = num(scalars["global_grad_norm"]) {
            report.compareScalar("global_grad_norm", model.online!.gradientNormSquared().squareRoot(), ref, rtol: 1e-4)
        }

        // Momentum weights and queues after the step.
        for key in file.keys where key.hasPrefix("expected/after/") {
            let name = String(key.dropFirst("expected/after/".count))
            if name == "queue_ptr" {
                report.compareExact("after/queue_ptr", model.queuePtr.value.values, try file.ints(key).values)
            } else if name == "image_queue" || name == "text_queue" {
                report.compare("after/\(name)", (name == "image_queue" ? model.imageQueue : model.textQueue).scalars, try file.floats(key), atol: 1e-5, rtol: 1e-4)
            } else if let p = params[name] {
                report.compare("after/\(name)", p.scalars, try file.floats(key), atol: 1e-6, rtol: 1e-5)
            } else {
                report.record(name: "after/\(name) (no such parameter or buffer)", passed: false)
            }
        }
        if let norms = json["momentum_norms_after"] as? [String: Any] {
            var worst = (0.0, "")
            for (name, v) in norms {
                guard let ref = num(v) else { continue }
                guard let p = params[name] else { worst = (.infinity, name + " (no such parameter)"); continue }
                let n = l2Norm(p)
                let rel = abs(n - ref) / max(ref, 1e-6)
                if ProcessInfo.processInfo.environment["SELFCHECK_DEBUG"] != nil, rel > 1e-6 { report.note("  momentum \(name): \(n) vs \(ref) rel \(rel)") }
                if rel > worst.0 { worst = (rel, name) }
            }
            report.add(Comparison(name: "momentum-norms-after (\(norms.count) tensors, worst \(worst.1))", maxAbs: worst.0, maxRel: worst.0, measure: worst.0, tolerance: 1e-4))
        }

        // One AdamW step. On a first step AdamW moves each element by lr·g/(|g| + eps) (plus the
        // decay both sides share), so an element whose gradient is rounding noise below eps (e.g.
        // attention key biases, whose exact gradient is 0) moves by a noise-driven amount of at
        // most lr·|g|/eps in either implementation. Per tensor with such elements the two results
        // may differ by up to lr·(‖min(1, |g_ours|/eps)‖ + min(√n, ‖g_ref‖/eps)), with ‖g_ref‖ the
        // fixture's gradient norm of that tensor.
        var noiseAllowance: [String: Double] = [:]
        let epsA = Double(adam.eps), lrA = Double(adam.lr)
        let refGradNorms = json["grad_norms_all"] as? [String: Any] ?? [:]
        for (name, p) in params {
            guard let g = p.grad else { continue }
            var a2 = 0.0, sub = false
            for x in g.scalars where Double(abs(x)) < epsA { let a = min(1, Double(abs(x)) / epsA); a2 += a * a; sub = true }
            guard sub else { continue }
            let refTerm = refGradNorms[name].flatMap(num).map { min(Double(g.count).squareRoot(), $0 / epsA) }
                ?? a2.squareRoot()  // no reference norm: assume the reference's noise is like ours
            noiseAllowance[name] = lrA * (a2.squareRoot() + refTerm)
        }
        adam.update()
        for key in file.keys where key.hasPrefix("expected/after_adamw/") {
            let name = String(key.dropFirst("expected/after_adamw/".count))
            guard let p = params[name] else { report.record(name: "after_adamw/\(name) (no such parameter)", passed: false); continue }
            report.compare("after_adamw/\(name)", p.scalars, try file.floats(key), atol: 1e-6, rtol: 1e-5)
        }
        if let norms = json["param_norms_after_adamw"] as? [String: Any] {
            // Tensors with gradient elements below AdamW's eps get the noise allowance above.
            var worst = (0.0, ""), noisy = 0
            for (name, v) in norms {
                guard let ref = num(v) else { continue }
                guard let p = params[name] else { worst = (.infinity, name + " (no such parameter)"); continue }
                let n = l2Norm(p)
                let allowance = noiseAllowance[name] ?? 0
                if allowance > 0 { noisy += 1 }
                let tol = 1e-4 * max(ref, 1e-6) + allowance
                let score = abs(n - ref) / tol
                if score > worst.0 { worst = (score, name) }
            }
            report.add(Comparison(name: "param-norms-after-adamw (\(norms.count) tensors, \(noisy) with sub-eps gradient elements; worst \(worst.1))", maxAbs: worst.0, maxRel: worst.0, measure: worst.0, tolerance: 1))
        }
    }
}

/// ‖t‖₂ accumulated in Double.
func l2Norm(_ t: Tensor) -> Double {
    var s = 0.0
    for i in 0..<t.count { s += Double(t.data[i]) * Double(t.data[i]) }
    return s.squareRoot()
}
