import XCTest
@testable import Tensor

/// Ops that recompute in the backward instead of keeping activations: gradient-checked, and
/// bit-identical to the keep-everything versions.
final class MemorySavingOpsTests: XCTestCase {
    override func tearDown() { Tensor.keepAttentionProbabilities = false }

    func testGELULinearGradients() {
        let w = randomTensor([5, 11], seed: 150), b = randomTensor([5], seed: 151)
        gradCheck("gelu-linear", inputs: [randomTensor([3, 11], seed: 152, scale: 2), w, b]) { $0[0].geluLinear($0[1], $0[2]) }
        gradCheck("gelu-linear-nobias", inputs: [randomTensor([2, 2, 11], seed: 153), w]) { $0[0].geluLinear($0[1], nil) }
    }

    func testGELULinearEqualsSeparateOps() {
        let x = randomTensor([7, 19], seed: 154, scale: 2), w = randomTensor([9, 19], seed: 155), b = randomTensor([9], seed: 156)
        func grads(_ fused: Bool) -> [[Float]] {
            for t in [x, w, b] { t.requiresGrad = true; t.gradStorage = nil }
            let y = fused ? x.geluLinear(w, b) : x.gelu().linear(w, b)
            let out = y.scalars
            (y * randomTensor(y.shape, seed: 157)).sum().backward()
            return [out, x.grad!.scalars, w.grad!.scalars, b.grad!.scalars]
        }
        XCTAssertEqual(grads(true), grads(false))
    }

    func testRecomputedAttentionProbabilitiesAreBitIdentical() {
        let q = randomTensor([2, 5, 8], seed: 160), k = randomTensor([2, 7, 8], seed: 161), v = randomTensor([2, 7, 8], seed: 162)
        let mask = Tensor([0, 0, -10000, 0, 0, 0, -10000, 0, 0, 0, 0, -10000, 0, 0], shape: [2, 7])
        func run(keep: Bool, dropout: (p: Float, seed: UInt64)?) -> [[Float]] {
            Tensor.keepAttentionProbabilities = keep
            for t in [q, k, v] { t.requiresGrad = true; t.gradStorage = nil }
            let y = Tensor.attention(q: q, k: k, v: v, heads: 2, mask: mask, scale: 0.35, dropout: dropout)
            let out = y.scalars
            (y * randomTensor(y.shape, seed: 163)).sum().backward()
            return [out, q.grad!.scalars, k.grad!.scalars, v.grad!.scalars]
        }
        XCTAssertEqual(run(keep: true, dropout: nil), run(keep: false, dropout: nil))
        XCTAssertEqual(run(keep: true, dropout: (0.2, 9)), run(keep: false, dropout: (0.2, 9)))
        // And the recomputing path passes the finite-difference check (with a mask and packed qkv).
        Tensor.keepAttentionProbabilities = false
        gradCheck("attn-recompute", inputs: [q, k, v]) { Tensor.attention(q: $0[0], k: $0[1], v: $0[2], heads: 2, mask: mask, scale: 0.35) }
        gradCheck("packed-recompute", inputs: [randomTensor([2, 3, 12], seed: 164)]) { Tensor.attention(packedQKV: $0[0], heads: 2, scale: 0.5) }
    }
}

final class FusedSublayerTests: XCTestCase {
    func testLayerNormLinearGradientsAndEquality() {
        let g = randomTensor([9], seed: 170), b = randomTensor([9], seed: 171), w = randomTensor([5, 9], seed: 172), bb = randomTensor([5], seed: 173)
        gradCheck("ln-linear", inputs: [randomTensor([2, 3, 9], seed: 174), g, b, w, bb]) {
            $0[0].layerNormLinear($0[1], $0[2], eps: 1e-5, $0[3], $0[4])
        }
        let x = randomTensor([4, 19], seed: 175), g2 = randomTensor([19], seed: 176), b2 = randomTensor([19], seed: 177)
        let w2 = randomTensor([7, 19], seed: 178), c2 = randomTensor([7], seed: 179)
        func run(_ fused: Bool) -> [[Float]] {
            for t in [x, g2, b2, w2, c2] { t.requiresGrad = true; t.gradStorage = nil }
            let y = fused ? x.layerNormLinear(g2, b2, eps: 1e-6, w2, c2) : x.layerNorm(g2, b2, eps: 1e-6).linear(w2, c2)
            let out = y.scalars
            (y * randomTensor(y.shape, seed: 180)).sum().backward()
            return [out] + [x, g2, b2, w2, c2].map { $0.grad!.scalars }
        }
        XCTAssertEqual(run(true), run(false))
    }

    func testAddingLinearGradientsAndEquality() {
        let w = randomTensor([6, 10], seed: 181), b = randomTensor([6], seed: 182)
        for gelu in [false, true] {
            gradCheck("adding-linear-\(gelu)", inputs: [randomTensor([3, 6], seed: 183), randomTensor([3, 10], seed: 184, scale: 2), w, b]) {
                $0[0].addingLinear($0[1], $0[2], $0[3], gelu: gelu)
            }
            let x = randomTensor([2, 4, 6], seed: 185), a = randomTensor([2, 4, 10], seed: 186, scale: 2)
            func run(_ fused: Bool) -> [[Float]] {
                for t in [x, a, w, b] { t.requiresGrad = true; t.gradStorage = nil }
                let y = fused ? x.addingLinear(a, w, b, gelu: gelu) : x + (gelu ? a.gelu() : a).linear(w, b)
                let out = y.scalars
                (y * randomTensor(y.shape, seed: 187)).sum().backward()
                return [out] + [x, a, w, b].map { $0.grad!.scalars }
            }
            XCTAssertEqual(run(true), run(false), "gelu \(gelu)")
        }
    }
}

final class DropoutReplayTests: XCTestCase {
    func testAddingLinearWithDropoutEqualsSeparateOps() {
        let x = randomTensor([3, 5, 6], seed: 190), a = randomTensor([3, 5, 10], seed: 191, scale: 2)
        let w = randomTensor([6, 10], seed: 192), b = randomTensor([6], seed: 193)
        for gelu in [false, true] {
            func run(_ fused: Bool) -> [[Float]] {
                for t in [x, a, w, b] { t.requiresGrad = true; t.gradStorage = nil }
                var rng = RandomGenerator(seed: 44)
                let y = fused ? x.addingLinear(a, w, b, gelu: gelu, dropout: 0.3, rng: &rng)
                              : (gelu ? a.gelu() : a).linear(w, b).dropout(0.3, rng: &rng) + x
                let after = rng.nextFloat()  // the generator advanced identically
                let out = y.scalars
                (y * randomTensor(y.shape, seed: 194)).sum().backward()
                return [out, [after]] + [x, a, w, b].map { $0.grad!.scalars }
            }
            let fused = run(true), separate = run(false)
            XCTAssertEqual(fused, separate, "gelu \(gelu)")
            XCTAssertNotEqual(fused[0], withNoGrad { x.addingLinear(a, w, b, gelu: gelu).scalars }, "dropout changed nothing")
        }
    }

    func testDropoutReplaysItsMaskInBackward() {
        let x = randomTensor([4, 9], seed: 195)
        x.requiresGrad = true
        var rng = RandomGenerator(seed: 7)
        let y = x.dropout(0.4, rng: &rng)
        y.sum().backward()
        // dL/dx is exactly the multiplier the forward applied: y = x·m ⇒ grad = m = y/x.
        for i in 0..<x.count {
            let m = x.grad!.scalars[i]
            XCTAssertTrue(m == 0 || abs(m - 1 / 0.6) < 1e-6, "multiplier \(m)")
            XCTAssertEqual(y.scalars[i], x.scalars[i] * m, accuracy: 1e-6)
        }
        XCTAssertGreaterThan(x.grad!.scalars.filter { $0 == 0 }.count, 0)
    }
}
