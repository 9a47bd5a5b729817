import Foundation
import XCTest
@testable import ALBEF
@testable import NN
@testable import Tensor

/// The ITM hard-negative sampler of both models (`HardNegativeSampler`): over many draws from
/// fixed similarities, the frequencies match the softmax weights (chi-square bound) and the
/// excluded pairs (the diagonal in pretraining, every same-image pair in retrieval) never occur.
final class HardNegativeSamplerTests: XCTestCase {
    /// Fixed `[B, B+Q]` similarities in [-1.5, 1.5] (every allowed weight ≥ ~1 %, so each
    /// expected count is large at 20 000 draws).
    func similarities(b: Int, q: Int, seed: UInt64) -> Tensor {
        var rng = RandomGenerator(seed: seed)
        return Tensor((0..<(b * (b + q))).map { _ in rng.uniform(Float(-1.5), Float(1.5)) }, shape: [b, b + q])
    }

    /// softmax(s[r, :B] + offset) in double with the excluded entries zeroed.
    func referenceWeights(_ s: Tensor, b: Int, offset: Double, excluded: (Int, Int) -> Bool) -> [[Double]] {
        let n = s.shape[1]
        return (0..<b).map { r in
            let x = (0..<b).map { Double(s.data[r * n + $0]) + offset }
            let m = x.max()!
            let e = x.map { Foundation.exp($0 - m) }
            let z = e.reduce(0, +)
            return (0..<b).map { excluded(r, $0) ? 0 : e[$0] / z }
        }
    }

    /// Upper (1 − 1e-6) quantile of χ²(df) (Wilson–Hilferty): the bound a correct sampler
    /// exceeds once in a million runs.
    func chiSquareBound(df: Int) -> Double {
        let d = Double(df), z = 4.753
        return d * Foundation.pow(1 - 2 / (9 * d) + z * (2 / (9 * d)).squareRoot(), 3)
    }

    /// Pearson's χ² of `counts` against `weights` (unnormalised) over the entries with weight > 0.
    func chiSquare(_ counts: [Int], _ weights: [Double]) -> (chi2: Double, df: Int) {
        let total = Double(counts.reduce(0, +)), z = weights.reduce(0, +)
        var chi2 = 0.0, cells = 0
        for (c, w) in zip(counts, weights) where w > 0 {
            let e = total * w / z
            chi2 += (Double(c) - e) * (Double(c) - e) / e
            cells += 1
        }
        return (chi2, cells - 1)
    }

    /// Draws `sample` `rounds` times and checks both directions row by row.
    func checkSampler(b: Int, offset: Float, exclusion: HardNegativeSampler.Exclusion, excluded: (Int, Int) -> Bool,
                      seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        let simI2T = similarities(b: b, q: 8, seed: seed), simT2I = similarities(b: b, q: 8, seed: seed + 1)
        // The weights the sampler uses are the softmax weights (Float vs double).
        let wI2T = HardNegativeSampler.weights(simI2T, batch: b, offset: offset, exclusion: exclusion)
        let wT2I = HardNegativeSampler.weights(simT2I, batch: b, offset: offset, exclusion: exclusion)
        let refI2T = referenceWeights(simI2T, b: b, offset: Double(offset), excluded: excluded)
        let refT2I = referenceWeights(simT2I, b: b, offset: Double(offset), excluded: excluded)
        for r in 0..<b {
            for j in 0..<b {
                XCTAssertEqual(Double(wI2T[r][j]), refI2T[r][j], accuracy: 1e-6, "w_i2t[\(r)][\(j)]", file: file, line: line)
                XCTAssertEqual(Double(wT2I[r][j]), refT2I[r][j], accuracy: 1e-6, "w_t2i[\(r)][\(j)]", file: file, line: line)
                if excluded(r, j) { XCTAssertEqual(wI2T[r][j], 0, file: file, line: line); XCTAssertEqual(wT2I[r][j], 0, file: file, line: line) }
            }
        }
        var rng = RandomGenerator(seed: seed &+ 99)
        let rounds = 20_000
        var imageCounts = [[Int]](repeating: [Int](repeating: 0, count: b), count: b)
        var textCounts = imageCounts
        for _ in 0..<rounds {
            let (ni, nt) = HardNegativeSampler.sample(simI2T: simI2T, simT2I: simT2I, batch: b, offset: offset, exclusion: exclusion, rng: &rng)
            for r in 0..<b { imageCounts[r][ni[r]] += 1; textCounts[r][nt[r]] += 1 }
        }
        for r in 0..<b {
            // Negative images of text r follow w_t2i[r]; negative texts of image r follow w_i2t[r].
            for (counts, ref, what) in [(imageCounts[r], refT2I[r], "image of text"), (textCounts[r], refI2T[r], "text of image")] {
                for j in 0..<b where excluded(r, j) {
                    XCTAssertEqual(counts[j], 0, "negative \(what) \(r): excluded index \(j) was drawn", file: file, line: line)
                }
                let (chi2, df) = chiSquare(counts, ref)
                XCTAssertGreaterThan(df, 0, file: file, line: line)
                XCTAssertLessThan(chi2, chiSquareBound(df: df), "negative \(what) \(r): counts \(counts) vs weights \(ref)", file: file, line: line)
                // The bound has power: the same counts against uniform weights are far outside it.
                let uniform = ref.map { $0 > 0 ? 1.0 : 0 }
                XCTAssertGreaterThan(chiSquare(counts, uniform).chi2, chiSquareBound(df: df), "the χ² test cannot tell the weights from uniform", file: file, line: line)
            }
        }
    }

    /// Pretraining: softmax of the in-batch block, diagonal excluded.
    func testPretrainingFrequenciesMatchSoftmaxAndNeverTheDiagonal() {
        checkSampler(b: 5, offset: 0, exclusion: .diagonal, excluded: { $0 == $1 }, seed: 10)
    }

    /// Retrieval: softmax(s + 1e-4), every pair of the same image excluded (ids 3 and 7 twice).
    func testRetrievalFrequenciesMatchSoftmaxAndNeverTheSameImage() {
        let ids: [Int64] = [3, 7, 3, 1, 7, 4]
        checkSampler(b: ids.count, offset: 1e-4, exclusion: .sameID(ids), excluded: { ids[$0] == ids[$1] }, seed: 20)
    }

    /// Degenerate weights (NaN similarities, or every other caption of the same image) fall
    /// back to a uniform draw that still avoids the excluded pairs where it can.
    func testDegenerateRowsFallBackWithoutExcludedPairs() {
        let b = 4
        let nan = Tensor([Float](repeating: .nan, count: b * b), shape: [b, b])
        var rng = RandomGenerator(seed: 3)
        for _ in 0..<200 {
            let (ni, nt) = HardNegativeSampler.sample(simI2T: nan, simT2I: nan, batch: b, exclusion: .diagonal, rng: &rng)
            for r in 0..<b { XCTAssertNotEqual(ni[r], r); XCTAssertNotEqual(nt[r], r) }
        }
        // Rows 0–2 share an image: row 0's only allowed negative is 3; row 3 may take any of 0–2.
        let ids: [Int64] = [5, 5, 5, 8]
        let sims = Tensor([Float](repeating: 0, count: b * b), shape: [b, b])
        for _ in 0..<200 {
            let (ni, _) = HardNegativeSampler.sample(simI2T: sims, simT2I: sims, batch: b, exclusion: .sameID(ids), rng: &rng)
            XCTAssertEqual(Array(ni[0..<3]), [3, 3, 3])
            XCTAssertTrue((0..<3).contains(ni[3]))
        }
        // Every caption of one image: nothing is allowed; another index is still taken.
        let same: [Int64] = [1, 1, 1, 1]
        for _ in 0..<50 {
            let (ni, nt) = HardNegativeSampler.sample(simI2T: sims, simT2I: sims, batch: b, exclusion: .sameID(same), rng: &rng)
            for r in 0..<b { XCTAssertNotEqual(ni[r], r); XCTAssertNotEqual(nt[r], r) }
        }
    }

    /// The pretraining step draws its negatives with this sampler from its own similarities:
    /// replaying the sampler on the step's `sim_i2t`/`sim_t2i` with a copy of the generator
    /// gives the step's negatives.
    func testPretrainingStepUsesTheSampler() {
        var c = ALBEFModelConfig()
        c.imageRes = 32; c.patchSize = 16; c.visionWidth = 32; c.vitDepth = 1; c.vitHeads = 2
        c.embedDim = 16; c.queueSize = 48
        c.bert = BertConfig(hiddenSize: 32, numHiddenLayers: 2, numAttentionHeads: 2, intermediateSize: 64,
                            hiddenDropoutProb: 0, attentionProbsDropoutProb: 0, vocabSize: 200, fusionLayer: 1, encoderWidth: 32)
        let b = 6, l = 7
        var data = RandomGenerator(seed: 4)
        let images = Tensor((0..<(b * 3 * 32 * 32)).map { _ in data.normal() }, shape: [b, 3, 32, 32])
        let ids = (0..<(b * l)).map { $0 % l == 0 ? Int32(101) : Int32(110 + data.int(below: 80)) }
        let batch = PretrainBatch(images: images, inputIds: ids, attentionMask: [Int32](repeating: 1, count: b * l), batchSize: b, length: l)
        let model = ALBEFPretrain(c, seed: 8)
        for seed in [UInt64(1), 2, 3] {
            var rng = RandomGenerator(seed: seed)
            var replay = rng
            let out = model.forwardStep(batch, alpha: 0.4, rng: &rng, keepActivations: true)
            model.commitEnqueue()
            let (ni, nt) = HardNegativeSampler.sample(simI2T: out.activations["sim_i2t"]!, simT2I: out.activations["sim_t2i"]!,
                                                      batch: b, exclusion: .diagonal, rng: &replay)
            XCTAssertEqual(out.negativeImageIndex, ni, "seed \(seed)")
            XCTAssertEqual(out.negativeTextIndex, nt, "seed \(seed)")
            for r in 0..<b { XCTAssertNotEqual(ni[r], r); XCTAssertNotEqual(nt[r], r) }
        }
    }
}
