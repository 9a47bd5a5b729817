import Foundation
import XCTest
@testable import ALBEF
@testable import ALBEFSelfCheck
@testable import NN
@testable import Tensor

/// The committed copy of `../shared/fixtures/albef-retrieval-micro-seed4` (kind `albef-retrieval-step`).
let retrievalFixture = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/albef-retrieval-micro-seed4")

/// `ALBEFRetrieval` (`models/model_retrieval.py`) on its own: keys, id targets, queues, sampling, training.
final class RetrievalModelTests: XCTestCase {
    override func setUp() { Threading.setThreads(1) }

    func tinyConfig(queue: Int = 32) -> ALBEFModelConfig {
        var c = ALBEFModelConfig()
        c.imageRes = 32; c.patchSize = 16; c.visionWidth = 32; c.vitDepth = 2; c.vitHeads = 2
        c.embedDim = 16; c.queueSize = queue
        c.bert = BertConfig(hiddenSize: 32, numHiddenLayers: 4, numAttentionHeads: 2, intermediateSize: 64,
                            hiddenDropoutProb: 0, attentionProbsDropoutProb: 0, vocabSize: 200, fusionLayer: 2, encoderWidth: 32)
        return c
    }

    func batch(_ c: ALBEFModelConfig, ids imageIds: [Int64], l: Int = 8, seed: UInt64 = 5) -> RetrievalBatch {
        let b = imageIds.count
        var rng = RandomGenerator(seed: seed)
        let img = Tensor((0..<(b * 3 * c.imageRes * c.imageRes)).map { _ in rng.normal() }, shape: [b, 3, c.imageRes, c.imageRes])
        var ids = [Int32](), mask = [Int32]()
        for r in 0..<b {
            let len = l - r % 3
            for t in 0..<l {
                ids.append(t == 0 ? 101 : (t < len ? Int32(110 + rng.int(below: 80)) : 0))
                mask.append(t < len ? 1 : 0)
            }
        }
        return RetrievalBatch(images: img, inputIds: ids, attentionMask: mask, imageIds: imageIds, batchSize: b, length: l)
    }

    /// The model built from the fixture's config has exactly the reference state_dict's keys
    /// and shapes: `text_encoder.*` without `bert.`, no `cls.*`, `idx_queue` int64.
    func testStateDictKeysAndShapesMatchTheFixture() throws {
        let json = try readFixtureJSON(retrievalFixture)
        var (config, _, _, _) = try FixtureModelConfig.read(json)
        config.imageRes = 32; config.embedDim = 16; config.queueSize = 32
        let model = ALBEFRetrieval(config)
        let tensors = json["tensors"] as! [String: [String: Any]]
        var expected: [String: [Int]] = [:]
        for (k, v) in tensors where !k.contains("/") { expected[k] = v["shape"] as? [Int] }
        var got: [String: [Int]] = [:]
        for (k, e) in model.stateEntries() { got[k] = e.shape }
        XCTAssertEqual(Set(got.keys).subtracting(expected.keys).sorted(), [])
        XCTAssertEqual(Set(expected.keys).subtracting(got.keys).sorted(), [])
        for (k, s) in expected { XCTAssertEqual(got[k], s, k) }
        XCTAssertEqual(got.count, 255)
        XCTAssertFalse(got.keys.contains { $0.contains(".bert.") || $0.contains(".cls.") })
        guard case .int(let q)? = model.stateEntries().first(where: { $0.0 == "idx_queue" })?.1 else { return XCTFail("idx_queue is not an int buffer") }
        XCTAssertEqual(q.value.values, [Int64](repeating: -100, count: 32))
        // The trainables the fixture has gradients for, in the order `momentum_pairs` lists.
        let grads = Set(tensors.keys.filter { $0.hasPrefix("expected/grad/") }.map { String($0.dropFirst("expected/grad/".count)) })
        XCTAssertEqual(Set(model.trainableParameters().map(\.0)), grads)
    }

    /// Targets from ids over [batch | queue]: every equal id is a positive, rows sum to 1.
    func testIdTargets() {
        let (all, t) = ContrastiveLoss.idTargets(ids: [1, 2, 1], queue: [2, -100, 1, 9])
        XCTAssertEqual(all, [1, 2, 1, 2, -100, 1, 9])
        let w: [[Float]] = [[1 / 3, 0, 1 / 3, 0, 0, 1 / 3, 0], [0, 0.5, 0, 0.5, 0, 0, 0], [1 / 3, 0, 1 / 3, 0, 0, 1 / 3, 0]]
        XCTAssertEqual(t.shape, [3, 7])
        XCTAssertEqual(t.scalars, w.flatMap { $0 })
    }

    /// A step: id_all is [idx | queue before]; the enqueue writes features and ids at ptr and
    /// advances it; sampled negatives never share the image id; distill off makes the targets the id targets.
    func testStepQueuesAndNegatives() {
        let c = tinyConfig()
        let model = ALBEFRetrieval(c, seed: 3)
        model.pack()
        let ids: [Int64] = [5, 5, 9, 2]
        let bt = batch(c, ids: ids)
        var rng = RandomGenerator(seed: 1)
        for step in 0..<12 {
            let before = model.idxQueue.value.values, ptr = Int(model.queuePtr.value.values[0])
            model.online!.zeroGradients()
            let out = model.forwardStep(bt, alpha: 0.4, rng: &rng, keepActivations: true)
            XCTAssertEqual(out.idxAll, ids + before)
            for r in 0..<4 {
                XCTAssertNotEqual(ids[out.negativeImageIndex[r]], ids[r], "step \(step): negative image of text \(r) is the same image")
                XCTAssertNotEqual(ids[out.negativeTextIndex[r]], ids[r], "step \(step): negative text of image \(r) is the same image")
            }
            // Rows 0 and 1 are the same image: their id targets put 1/k on every matching column.
            let y = out.activations["sim_targets"]!
            let n = 4 + c.queueSize
            let k0 = out.idxAll.filter { $0 == 5 }.count
            XCTAssertEqual(y.data[0 * n + 1], 1 / Float(k0))
            XCTAssertEqual(y.data[1 * n + 0], 1 / Float(k0))
            out.total.backward()
            model.commitEnqueue()
            XCTAssertEqual(Array(model.idxQueue.value.values[ptr..<(ptr + 4)]), ids)
            XCTAssertEqual(Int(model.queuePtr.value.values[0]), (ptr + 4) % c.queueSize)
            let featM = out.activations["text_feat_m"]!
            for i in 0..<c.embedDim { XCTAssertEqual(model.textQueue.data[i * c.queueSize + ptr + 1], featM.data[1 * c.embedDim + i]) }
            XCTAssertTrue(out.total.item.isFinite)
            XCTAssertNotNil(model.temp.grad)
        }
        let plain = ALBEFRetrieval(c, distill: false, seed: 3)
        var rng2 = RandomGenerator(seed: 2)
        let out = plain.forwardStep(bt, alpha: 0.4, rng: &rng2, keepActivations: true)
        XCTAssertEqual(out.activations["sim_i2t_targets"]!.scalars, out.activations["sim_targets"]!.scalars)
        XCTAssertNotEqual(model.idxQueue.value.values, plain.idxQueue.value.values)
    }

    /// The temperature is not clamped (pretraining clamps it to [0.001, 0.5]).
    func testTemperatureIsNotClamped() {
        let c = tinyConfig()
        let model = ALBEFRetrieval(c, seed: 4)
        model.temp.data[0] = 0.9
        var rng = RandomGenerator(seed: 1)
        let out = model.forwardStep(batch(c, ids: [1, 2, 3, 4]), alpha: 0.4, rng: &rng)
        XCTAssertEqual(model.temp.item, 0.9)
        XCTAssertEqual(out.diagnostics["temp_used"], 0.9)
    }

    /// 40 AdamW steps on one fixed batch drive the loss down.
    func testFortyStepsReduceLoss() {
        let c = tinyConfig()
        let model = ALBEFRetrieval(c, seed: 7)
        model.pack()
        let opt = AdamW(model.online!, lr: 1e-3, weightDecay: 0.02)
        let bt = batch(c, ids: [1, 1, 2, 3])
        var rng = RandomGenerator(seed: 11)
        var losses: [Float] = []
        for _ in 0..<40 {
            model.online!.zeroGradients()
            let out = model.forwardStep(bt, alpha: 0.4, rng: &rng)
            out.total.backward()
            model.commitEnqueue()
            opt.update()
            losses.append(out.total.item)
        }
        XCTAssertLessThan(losses.suffix(5).reduce(0, +) / 5, losses[0] * 0.7, "loss did not fall: \(losses.prefix(5)) … \(losses.suffix(5))")
    }

    /// A pretraining checkpoint loads as `Retrieval.py` loads it: `text_encoder.bert.X` →
    /// `text_encoder.X`, `cls.*` dropped, `idx_queue` kept at its init.
    func testLoadsAPretrainingCheckpoint() throws {
        let c = tinyConfig()
        let pre = ALBEFPretrain(c, seed: 21)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pre-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try pre.save(to: path)
        let model = ALBEFRetrieval(c, seed: 22)
        let r = try model.loadPretrainedCheckpoint(path)
        XCTAssertEqual(r.missing, ["idx_queue"])
        XCTAssertEqual(r.unexpected, [])
        XCTAssertEqual(model.textEncoder.embeddings.word.weight.scalars, pre.textEncoder.bert.embeddings.word.weight.scalars)
        XCTAssertEqual(model.textEncoderM.layers[3].crossAttention!.attention.key.weight.scalars,
                       pre.textEncoderM.bert.layers[3].crossAttention!.attention.key.weight.scalars)
        XCTAssertEqual(model.visualEncoder.posEmbed.scalars, pre.visualEncoder.posEmbed.scalars)
        XCTAssertEqual(model.imageQueue.scalars, pre.imageQueue.scalars)
        XCTAssertEqual(model.idxQueue.value.values, [Int64](repeating: -100, count: c.queueSize))
    }
}
