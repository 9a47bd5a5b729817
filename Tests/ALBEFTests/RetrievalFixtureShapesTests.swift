import Foundation
import XCTest
@testable import ALBEF
@testable import ALBEFSelfCheck
@testable import NN
@testable import Tensor

/// The selfcheck reads every size from the fixture: a fixture of kind `albef-retrieval-step`
/// written by our own model at other sizes (B = 6, L = 7, Q = 24, E = 8, k_test = 3, 7 eval images,
/// 9 captions, another ViT/BERT shape, α stored in float32) passes, and one wrong expected
/// value in it fails. (Self-consistency, not parity: parity is `RetrievalSelfCheckTests`.)
final class RetrievalFixtureShapesTests: XCTestCase {
    override func setUp() { Threading.setThreads(1) }

    func config() -> ALBEFModelConfig {
        var c = ALBEFModelConfig()
        c.imageRes = 32; c.patchSize = 16; c.visionWidth = 24; c.vitDepth = 1; c.vitHeads = 3; c.vitMlpRatio = 2
        c.embedDim = 8; c.queueSize = 24
        c.bert = BertConfig(hiddenSize: 16, numHiddenLayers: 3, numAttentionHeads: 2, intermediateSize: 40,
                            hiddenDropoutProb: 0, attentionProbsDropoutProb: 0, vocabSize: 300, initializerRange: 0.2,
                            fusionLayer: 1, encoderWidth: 24)
        return c
    }

    /// A model in the fixture's initial state: seed-5 init, momentum perturbed, a partly filled id queue.
    func initialModel(_ c: ALBEFModelConfig) -> ALBEFRetrieval {
        let m = ALBEFRetrieval(c, seed: 5)
        var rng = RandomGenerator(seed: 77)
        for (_, t) in m.momentumParameters() { for i in 0..<t.count { t.data[i] += 0.02 * rng.normal() } }
        m.idxQueue.value = IntTensor((0..<24).map { $0 < 12 ? Int64([3, 8, 11, 5][$0 % 4] + $0) : -100 }, shape: [1, 24])
        m.idxQueue.value.values[2] = 11
        m.queuePtr.value = IntTensor([12], shape: [1])
        return m
    }

    func int(_ v: [Int64], _ shape: [Int]) -> StateEntry { .int(IntBuffer(IntTensor(v, shape: shape))) }

    func writeFixture(to dir: URL) throws {
        let c = config()
        let b = 6, l = 7, idx: [Int64] = [11, 4, 11, 9, 4, 2], negImage = [1, 0, 1, 0, 0, 1], negText = [3, 2, 3, 1, 5, 0]
        var rng = RandomGenerator(seed: 9)
        let images = Tensor((0..<(b * 3 * 32 * 32)).map { _ in rng.normal() }, shape: [b, 3, 32, 32])
        var ids = [Int64](), mask = [Int64]()
        for r in 0..<b { for t in 0..<l { let on = t < l - r % 3; ids.append(t == 0 ? 101 : (on ? Int64(110 + rng.int(below: 150)) : 0)); mask.append(on ? 1 : 0) } }
        let nImg = 7, nTxt = 9, evalL = 11
        let evalImages = Tensor((0..<(nImg * 3 * 32 * 32)).map { _ in rng.normal() }, shape: [nImg, 3, 32, 32])
        var eIds = [Int64](), eMask = [Int64]()
        for r in 0..<nTxt { for t in 0..<evalL { let on = t < 4 + r % 6; eIds.append(t == 0 ? 101 : (on ? Int64(110 + rng.int(below: 150)) : 0)); eMask.append(on ? 1 : 0) } }
        let txt2img = [0, 0, 1, 2, 3, 3, 4, 5, 6]

        let model = initialModel(c)
        // Copies: the step below changes the live tensors and buffers.
        var items: [(String, StateEntry)] = model.stateEntries().map { k, e in
            switch e {
            case .float(let t): return (k, .float(t.detachedCopy()))
            case .int(let q): return (k, .int(IntBuffer(q.value)))
            }
        }
        items += [("batch/image", .float(images)), ("batch/input_ids", int(ids, [b, l])), ("batch/attention_mask", int(mask, [b, l])),
                  ("batch/idx", int(idx, [b])), ("batch/alpha", .float(Tensor([0.4], shape: []))),
                  ("batch/itm_neg_image_idx", int(negImage.map(Int64.init), [b])), ("batch/itm_neg_text_idx", int(negText.map(Int64.init), [b])),
                  ("eval/images", .float(evalImages)), ("eval/input_ids", int(eIds, [nTxt, evalL])), ("eval/attention_mask", int(eMask, [nTxt, evalL]))]
        // Evaluation from the initial state.
        let s = RetrievalScoreMatrices.compute(model: model, images: evalImages, ids: eIds.map { Int32($0) }, mask: eMask.map { Int32($0) },
                                               length: evalL, k: 3)
        items += [("eval/image_feats", .float(s.imageFeats!)), ("eval/sims_matrix", .float(s.sims)),
                  ("eval/score_matrix_i2t", .float(Tensor(s.scoreI2T, shape: [nImg, nTxt]))),
                  ("eval/score_matrix_t2i", .float(Tensor(s.scoreT2I, shape: [nTxt, nImg])))]
        var img2txt = [String: [Int]]()
        for (t, i) in txt2img.enumerated() { img2txt[String(i), default: []].append(t) }
        let recall = RetrievalRecall(scoreI2T: s.scoreI2T, scoreT2I: s.scoreT2I, imageToTexts: (0..<nImg).map { img2txt[String($0)] ?? [] },
                                     textToImage: txt2img)
        // The step.
        model.pack()
        let adam = AdamW(model.online!, lr: 1e-5, weightDecay: 0.02)
        let batch = RetrievalBatch(images: images, inputIds: ids.map { Int32($0) }, attentionMask: mask.map { Int32($0) }, imageIds: idx,
                                   batchSize: b, length: l)
        var r0 = RandomGenerator(seed: 0)
        model.online!.zeroGradients()
        let out = model.forwardStep(batch, alpha: Double(Float(0.4)), rng: &r0,
                                    injection: StepInjection(negativeImageIndex: negImage, negativeTextIndex: negText), keepActivations: true)
        out.total.backward()
        model.commitEnqueue()
        for name in ["image_embeds", "text_feat_m", "sim_targets", "sim_i2t_targets", "itm_weights_t2i", "fusion_neg_cls", "itm_logits", "loss_itm"] {
            items.append(("expected/" + name, .float(out.activations[name]!.detachedCopy())))
        }
        items.append(("expected/idx_all", int(out.idxAll, [1, out.idxAll.count])))
        var gradNorms: [String: Double] = [:]
        for (name, p) in model.trainableParameters() {
            items.append(("expected/grad/" + name, .float(p.grad!.detachedCopy())))
            gradNorms[name] = l2Norm(p.grad!)
        }
        items += [("expected/after/idx_queue", int(model.idxQueue.value.values, [1, 24])), ("expected/after/queue_ptr", int(model.queuePtr.value.values, [1])),
                  ("expected/after/text_queue", .float(model.textQueue.detachedCopy()))]
        for (name, p) in model.momentumParameters() { items.append(("expected/after/" + name, .float(p.detachedCopy()))) }
        let globalNorm = model.online!.gradientNormSquared().squareRoot()
        adam.update()
        for (name, p) in model.trainableParameters() { items.append(("expected/after_adamw/" + name, .float(p.detachedCopy()))) }
        try SafeTensorsFile.write(items, to: dir.appendingPathComponent("fixture.safetensors").path)

        let online = model.trainableParameters().prefix(model.momentumParameters().count).map(\.0)
        let json: [String: Any] = [
            "kind": "albef-retrieval-step",
            "config": ["shapes": ["image_res": 32, "patch_size": 16, "vit_embed": 24, "vit_depth": 1, "vit_heads": 3, "vit_mlp_ratio": 2.0],
                       "bert_config": ["hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 40,
                                       "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "vocab_size": 300,
                                       "initializer_range": 0.2, "fusion_layer": 1, "encoder_width": 24, "hidden_act": "gelu"],
                       "retrieval_config": ["k_test": 3, "distill": true, "momentum": 0.995, "temp": 0.07, "batch_size_test": 2],
                       "optimizer": ["lr": 1e-5, "weight_decay": 0.02, "betas": [0.9, 0.999], "eps": 1e-8]],
            "scalars": ["loss_ita": Double(out.lossITA.item), "loss_itm": Double(out.lossITM.item), "loss_total": Double(out.total.item),
                        "alpha": 0.4, "queue_ptr_before": 12, "queue_ptr_after": 18, "global_grad_norm": globalNorm,
                        "itm_accuracy": Double(out.diagnostics["itm_accuracy"]!)],
            "grad_norms": gradNorms, "params_without_grad": [String](),
            "momentum_pairs": zip(online, model.momentumParameters().map(\.0)).map { [$0, $1] },
            "eval": ["k_test": 3, "txt2img": Dictionary(uniqueKeysWithValues: txt2img.enumerated().map { (String($0.offset), $0.element) }),
                     "img2txt": img2txt, "itm_eval": Dictionary(uniqueKeysWithValues: recall.byName)],
            "tensors": Dictionary(uniqueKeysWithValues: items.map { k, e -> (String, Any) in
                if case .int = e { return (k, ["shape": e.shape, "dtype": "int64"]) }
                return (k, ["shape": e.shape, "dtype": "float32"])
            }),
        ]
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("fixture.json"))
    }

    func testOtherSizesPassAndAWrongValueFails() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("retrieval-shapes-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try writeFixture(to: dir)
        let report = SelfCheckReport(echo: false)
        try RetrievalStepSelfCheck.run(directory: dir, report: report)
        for f in report.failures { XCTFail(f.line) }
        XCTAssertTrue(report.passed, report.verdict)
        XCTAssertTrue(report.notes.contains { $0.contains("B=6 L=7") && $0.contains("E=8 Q=24") }, "\(report.notes)")
        XCTAssertTrue(report.notes.contains { $0.contains("7 images, 9 captions of length 11, k_test 3") }, "\(report.notes)")
        XCTAssertTrue(report.comparisons.contains { $0.name.hasPrefix("eval/score_matrix_t2i top-k sets (9 rows") })

        // The same fixture with one wrong recall fails there only.
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("fixture.json"))) as! [String: Any]
        var ev = json["eval"] as! [String: Any]
        var m = ev["itm_eval"] as! [String: Any]
        m["r_mean"] = (m["r_mean"] as! Double) + 0.5
        ev["itm_eval"] = m
        json["eval"] = ev
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("fixture.json"))
        let bad = SelfCheckReport(echo: false)
        try RetrievalStepSelfCheck.run(directory: dir, report: bad)
        XCTAssertEqual(bad.failures.map { String($0.name.prefix { $0 != " " }) }, ["itm_eval/r_mean"])
    }
}
