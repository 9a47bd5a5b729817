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
    /// Builds the model config from `fixture.json` (`config.tiny`/`config.<preset>` + `bert_config`).
    public static func modelConfig(_ json: [String: Any]) throws -> (ALBEFModelConfig, batch: Int, length: Int, alpha: Float) {
        guard let cfg = json["config"] as? [String: Any] else { throw SelfCheckError.invalid("fixture.json: no 'config'") }
        // The model preset: `config.tiny`, else whichever entry holds ViT/BERT shape keys.
        let presetKeys = ["vit_heads", "vit_embed", "vit_depth", "patch_size", "image_res", "bert_hidden"]
        let candidates = cfg.filter { !["albef_config", "bert_config", "optimizer", "special_token_ids"].contains($0.key) }
            .sorted { $0.key < $1.key }.compactMap { $0.value as? [String: Any] }
        let preset = (cfg["tiny"] as? [String: Any])
            ?? candidates.max { a, b in presetKeys.filter { a[$0] != nil }.count < presetKeys.filter { b[$0] != nil }.count }
            .flatMap { p in presetKeys.contains { p[$0] != nil } ? p : nil } ?? [:]
        guard let bertJSON = cfg["bert_config"] else { throw SelfCheckError.invalid("fixture.json: no 'config.bert_config'") }
        let bert = try JSONDecoder().decode(BertConfig.self, from: JSONSerialization.data(withJSONObject: bertJSON))
        var c = ALBEFModelConfig()
        c.bert = bert
        let albef = cfg["albef_config"] as? [String: Any] ?? [:]
        func int(_ k: String, _ d: Int) -> Int { num(preset[k]).map { Int($0) } ?? num(albef[k]).map { Int($0) } ?? d }
        func flt(_ k: String, _ d: Double) -> Double { num(preset[k]) ?? num(albef[k]) ?? d }
        c.imageRes = int("image_res", 256)
        c.patchSize = int("patch_size", 16)
        c.visionWidth = int("vit_embed", num(albef["vision_width"]).map { Int($0) } ?? 768)
        c.vitDepth = int("vit_depth", 12)
        c.vitHeads = int("vit_heads", 12)
        c.vitMlpRatio = Float(flt("vit_mlp_ratio", 4))
        c.embedDim = int("embed_dim", 256)
        c.queueSize = int("queue_size", 65536)
        c.temp = Float(flt("temp", 0.07))
        c.momentum = Float(flt("momentum", 0.995))
        c.mlmProbability = flt("mlm_probability", 0.15)
        let alpha = Float(num(cfg["alpha"]) ?? flt("alpha", 0.4))
        c.alpha = alpha
        if let sp = cfg["special_token_ids"] as? [String: Any] {
            c.padId = Int32(num(sp["pad"]) ?? 0); c.clsId = Int32(num(sp["cls"]) ?? 101)
            c.sepId = Int32(num(sp["sep"]) ?? 102); c.maskId = Int32(num(sp["mask"]) ?? 103)
        }
        return (c, int("batch", 0), int("text_len", 0), alpha)
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
        config.imageRes = imgShape[2]
        if let q = file.entries["image_queue"]?.shape, q.count == 2 { config.embedDim = q[0]; config.queueSize = q[1] }
        // The ViT's shape from its weights too (a fixture's config may name its preset otherwise or
        // omit keys): patch size and width from the patch embedding, depth from the blocks, the MLP
        // ratio from the first block (heads only exist in the config).
        if let pe = file.entries["visual_encoder.patch_embed.proj.weight"]?.shape, pe.count == 4 {
            config.visionWidth = pe[0]
            config.patchSize = pe[2]
        }
        let blocks = Set(file.entries.keys.compactMap { k -> Int? in
            guard k.hasPrefix("visual_encoder.blocks.") else { return nil }
            return Int(k.dropFirst("visual_encoder.blocks.".count).prefix { $0.isNumber })
        })
        if !blocks.isEmpty { config.vitDepth = blocks.count }
        if let fc1 = file.entries["visual_encoder.blocks.0.mlp.fc1.weight"]?.shape, fc1.count == 2, config.visionWidth > 0 {
            config.vitMlpRatio = Float(fc1[0]) / Float(config.visionWidth)
        }
        guard config.vitHeads > 0, config.visionWidth % config.vitHeads == 0 else {
            throw SelfCheckError.invalid("fixture.json: ViT width \(config.visionWidth) is not divisible by vit_heads \(config.vitHeads); give the heads as config.<preset>.vit_heads")
        }
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
