import Foundation
import XCTest
@testable import Tensor
@testable import Training
import Distributed
import ALBEF

/// The `precision` config key: fp32 by default, bf16 when asked, anything else an error that
/// names the key, the file and the allowed values; a typo of the key gets a suggestion.
final class PrecisionConfigTests: XCTestCase {
    func write(_ text: String) throws -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString).yaml").path
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func testPrecisionKey() throws {
        XCTAssertEqual(try TrainConfig.load(write("batch_size: 4\n")).precision, .fp32)
        XCTAssertEqual(try TrainConfig.load(write("precision: bf16\n")).precision, .bf16)
        XCTAssertEqual(try TrainConfig.load(write("precision: FP32\n")).precision, .fp32)
        let bad = try write("precision: fp16\n")
        XCTAssertThrowsError(try TrainConfig.load(bad)) { e in
            XCTAssertTrue("\(e)".contains("precision") && "\(e)".contains("fp32, bf16") && "\(e)".contains(bad), "\(e)")
        }
        XCTAssertThrowsError(try TrainConfig.load(write("precison: bf16\n"))) { e in
            XCTAssertTrue("\(e)".contains("did you mean 'precision'"), "\(e)")
        }
    }

    /// `bf16_fp32_weight_grads`: the default covers the text side; a list set in the file replaces
    /// it (`[]`: none); a name matching no parameter, or a value that is not a list of names, is
    /// an error naming the key and the file. Applied to a model, exactly the parameters under
    /// the names are flagged, a tied weight through any of its keys.
    func testBF16WeightGradPolicy() throws {
        let d = try TrainConfig.load(write("precision: bf16\n"))
        XCTAssertEqual(d.bf16FP32WeightGrads, ["text_encoder", "vision_proj", "text_proj", "itm_head"])
        XCTAssertEqual(try TrainConfig.load(write("bf16_fp32_weight_grads: []\n")).bf16FP32WeightGrads, [])
        let bad = try write("bf16_fp32_weight_grads: text_encoder\n")
        XCTAssertThrowsError(try TrainConfig.load(bad)) { e in
            XCTAssertTrue("\(e)".contains("bf16_fp32_weight_grads") && "\(e)".contains(bad) && "\(e)".contains("list"), "\(e)")
        }
        var c = TrainConfig.testMicro(batchSize: 4, queueSize: 32, dropout: 0)
        let model = ALBEFPretrain(c.model, seed: 1)
        let params = model.namedParameters()
        func flagged() -> Set<String> { Set(params.filter { $0.1.weightGradFP32 }.map(\.0)) }
        let matched = try c.applyBF16WeightGradPolicy(to: model)
        XCTAssertEqual(matched.map(\.name), ["text_encoder", "vision_proj", "text_proj", "itm_head"])
        XCTAssertTrue(flagged().contains("text_encoder.bert.encoder.layer.0.attention.self.query.weight"))
        XCTAssertTrue(flagged().contains("vision_proj.weight"))
        XCTAssertFalse(flagged().contains { $0.hasPrefix("visual_encoder.") }, "the vision encoder's stay bf16")
        XCTAssertFalse(flagged().contains { $0.hasPrefix("text_encoder_m.") || $0.hasPrefix("vision_proj_m.") }, "momentum weights have no gradient")
        c.bf16FP32WeightGrads = ["visual_encoder.blocks.0"]
        c.explicitBF16FP32WeightGrads = true
        XCTAssertEqual(try c.applyBF16WeightGradPolicy(to: model).map(\.matrices), [4])
        XCTAssertTrue(flagged().allSatisfy { $0.hasPrefix("visual_encoder.blocks.0.") } && !flagged().isEmpty, "\(flagged())")
        c.bf16FP32WeightGrads = ["text_encoder.cls.predictions.decoder"]
        try c.applyBF16WeightGradPolicy(to: model)
        XCTAssertTrue(flagged().contains("text_encoder.bert.embeddings.word_embeddings.weight"), "tied to the decoder: \(flagged())")
        c.bf16FP32WeightGrads = ["text_encoders"]
        XCTAssertThrowsError(try c.applyBF16WeightGradPolicy(to: model)) { e in
            XCTAssertTrue("\(e)".contains("'text_encoders' names no parameter") && "\(e)".contains("visual_encoder"), "\(e)")
        }
        c.bf16FP32WeightGrads = []
        try c.applyBF16WeightGradPolicy(to: model)
        XCTAssertEqual(flagged(), [])
    }

    /// Two in-process ranks training in bf16 keep bit-identical weights (gradients are averaged
    /// in fp32; each rank's bf16 weight cache is its own), and the losses stay finite.
    func testDataParallelBF16StaysInSync() throws {
        guard MatmulPrecision.set(.bf16) == nil else { throw XCTSkip("no bf16 GEMM backend: \(MatmulPrecision.cpu)") }
        defer { MatmulPrecision.set(.fp32) }
        let config: TrainConfig = {
            var c = TrainConfig.testMicro(batchSize: 4, queueSize: 32, dropout: 0.1)
            c.precision = .bf16
            return c
        }()
        let data = SyntheticBatches(batchSize: 4, length: 9, imageRes: 32, vocabSize: 1200, seed: 77)
        let world = LocalWorld(size: 2)
        let lock = NSLock()
        var finals: [Int: ([Float], [Double])] = [:]
        var errors: [String] = []
        world.run { rank, comm in
            do {
                let trainer = try Trainer(config: config, comm: comm, seed: 5)
                var losses: [Double] = []
                for s in 0..<3 {
                    losses.append(try trainer.step(data.batch(rank: rank, step: s), epoch: 0, iteration: s, iterationsPerEpoch: 10).loss)
                    try trainer.checkDivergence()
                }
                let on = trainer.model.online!
                lock.lock(); finals[rank] = (Array(UnsafeBufferPointer(start: on.values.pointer, count: on.count)), losses); lock.unlock()
            } catch { lock.lock(); errors.append("\(error)"); lock.unlock() }
        }
        XCTAssertEqual(errors, [])
        guard let a = finals[0], let b = finals[1] else { return XCTFail("missing ranks") }
        XCTAssertTrue(a.0 == b.0, "parameters differ between ranks")
        XCTAssertEqual(a.1, b.1)
        XCTAssertTrue(a.1.allSatisfy(\.isFinite), "\(a.1)")
    }

    /// Weights split in place during a bf16 step: every reader sees the fp32 values. Training
    /// with the split (the default) ends with bit-identical losses, weights, momentum weights and
    /// AdamW moments to training with a cached copy laid out the same way (`no-weight-split`),
    /// with the optimizer in backward (bucket by bucket) and with two accumulated micro-steps;
    /// after every step no weight is left split.
    func testWeightSplitMatchesCache() throws {
        guard MatmulPrecision.set(.bf16) == nil else { throw XCTSkip("no bf16 GEMM backend: \(MatmulPrecision.cpu)") }
        let saved = MatmulPrecision.ablations
        defer { MatmulPrecision.ablations = saved; MatmulPrecision.set(.fp32); BF16Weights.clear() }
        Threading.setThreads(1)
        let data = SyntheticBatches(batchSize: 4, length: 9, imageRes: 32, vocabSize: 1200, seed: 78)
        func train(accum: Int, split: Bool) throws -> [[Float]] {
            MatmulPrecision.ablations = split ? [] : ["no-weight-split"]
            var config = TrainConfig.testMicro(batchSize: 4, queueSize: 32, dropout: 0.1)
            config.accumSteps = accum
            let comm = LocalWorld(size: 1).communicators()[0]
            let trainer = try Trainer(config: config, comm: comm, seed: 6)
            var losses: [Float] = []
            let splits0 = BF16Weights.splitCount
            for s in 0..<3 {
                let micro = (0..<accum).map { data.batch(rank: 0, step: s * accum + $0) }
                losses.append(Float(try trainer.step(micro, epoch: 0, iteration: s, iterationsPerEpoch: 10).loss))
                XCTAssertEqual(BF16Weights.splitNow, 0, "a weight left split after step \(s)")
            }
            if split { XCTAssertGreaterThan(BF16Weights.splitCount - splits0, 0, "weights were split") }
            let on = trainer.model.online!, mo = trainer.model.momentum!
            func values(_ s: Storage, _ n: Int) -> [Float] { Array(UnsafeBufferPointer(start: s.pointer, count: n)) }
            return [losses, values(on.values, on.count), values(mo.values, mo.count), values(trainer.optimizer.m, on.count),
                    values(trainer.optimizer.v, on.count)]
        }
        for accum in [1, 2] {
            let split = try train(accum: accum, split: true), copy = try train(accum: accum, split: false)
            for (i, what) in ["losses", "weights", "momentum weights", "AdamW m", "AdamW v"].enumerated() {
                XCTAssertTrue(split[i] == copy[i], "\(what) differ (accum \(accum)): a reader saw a split weight")
            }
        }
    }

    /// The bf16 weight cache never serves stale weights across steps: training with the cache
    /// dropped before every step (every weight converted fresh) ends with bit-identical weights
    /// to training with it (the generation rule reconverting after each optimizer step). The
    /// linear weights are cached here (`no-weight-split`) instead of split in place.
    func testWeightCacheMatchesFreshConversionEveryStep() throws {
        guard MatmulPrecision.set(.bf16) == nil else { throw XCTSkip("no bf16 GEMM backend: \(MatmulPrecision.cpu)") }
        let saved = MatmulPrecision.ablations
        MatmulPrecision.ablations = ["no-weight-split"]
        defer { MatmulPrecision.ablations = saved; MatmulPrecision.set(.fp32) }
        Threading.setThreads(1)
        let config = TrainConfig.testMicro(batchSize: 4, queueSize: 32, dropout: 0.1)
        let data = SyntheticBatches(batchSize: 4, length: 9, imageRes: 32, vocabSize: 1200, seed: 77)
        func train(clearing: Bool) throws -> ([Float], [Double]) {
            let comm = LocalWorld(size: 1).communicators()[0]
            let trainer = try Trainer(config: config, comm: comm, seed: 5)
            var losses: [Double] = []
            for s in 0..<4 {
                if clearing { BF16Weights.clear() }
                losses.append(try trainer.step(data.batch(rank: 0, step: s), epoch: 0, iteration: s, iterationsPerEpoch: 10).loss)
            }
            let on = trainer.model.online!
            return (Array(UnsafeBufferPointer(start: on.values.pointer, count: on.count)), losses)
        }
        let cached = try train(clearing: false)
        let c = BF16Weights.counters
        let fresh = try train(clearing: true)
        XCTAssertGreaterThan(c.hits, 0, "the cache was used")
        XCTAssertEqual(cached.1, fresh.1, "losses")
        XCTAssertTrue(cached.0 == fresh.0, "weights differ: the cache served a stale copy")
    }
}
