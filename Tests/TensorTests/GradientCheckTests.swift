import XCTest
@testable import Tensor

/// Every differentiable op, checked against central differences on small odd shapes.
final class GradientCheckTests: XCTestCase {
    override func setUp() { Threading.setThreads(1) }

    func testLinearAndMatmul() {
        gradCheck("linear", inputs: [randomTensor([2, 3, 5], seed: 1), randomTensor([7, 5], seed: 2), randomTensor([7], seed: 3)]) {
            $0[0].linear($0[1], $0[2])
        }
        gradCheck("linear-nobias", inputs: [randomTensor([3, 4], seed: 4), randomTensor([2, 4], seed: 5)]) { $0[0].linear($0[1], nil) }
        gradCheck("bmm", inputs: [randomTensor([2, 3, 4], seed: 6), randomTensor([2, 4, 5], seed: 7)]) { $0[0].matmul($0[1]) }
        gradCheck("bmm-tB", inputs: [randomTensor([2, 3, 4], seed: 8), randomTensor([2, 5, 4], seed: 9)]) { $0[0].matmul($0[1], transposeB: true) }
        gradCheck("mm-shared", inputs: [randomTensor([2, 3, 4], seed: 10), randomTensor([4, 6], seed: 11)]) { $0[0].matmul($0[1]) }
    }

    func testBroadcastArithmetic() {
        let shapes: [([Int], [Int])] = [([3, 4], [3, 4]), ([2, 3, 4], [4]), ([2, 1, 4], [3, 1]), ([3, 5], []), ([1], [2, 3])]
        for (i, (sa, sb)) in shapes.enumerated() {
            let a = randomTensor(sa, seed: UInt64(20 + i)), b = randomTensor(sb, seed: UInt64(40 + i))
            for j in 0..<b.count { b.data[j] = b.data[j] >= 0 ? b.data[j] + 0.8 : b.data[j] - 0.8 }
            gradCheck("add\(sa)\(sb)", inputs: [a, b]) { $0[0] + $0[1] }
            gradCheck("sub\(sa)\(sb)", inputs: [a, b]) { $0[0] - $0[1] }
            gradCheck("mul\(sa)\(sb)", inputs: [a, b]) { $0[0] * $0[1] }
            gradCheck("div\(sa)\(sb)", inputs: [a, b]) { $0[0] / $0[1] }
        }
    }

    func testUnary() {
        let x = randomTensor([3, 5], seed: 60)
        gradCheck("exp", inputs: [x]) { $0[0].exp() }
        gradCheck("tanh", inputs: [x]) { $0[0].tanh() }
        gradCheck("gelu", inputs: [x]) { $0[0].gelu() }
        gradCheck("clamp", inputs: [x]) { $0[0].clamped(min: -0.5, max: 0.7) }
        let p = randomTensor([4, 3], seed: 61)
        for i in 0..<p.count { p.data[i] = abs(p.data[i]) + 0.5 }
        gradCheck("log", inputs: [p]) { $0[0].log() }
        gradCheck("sqrt", inputs: [p]) { $0[0].sqrt() }
        gradCheck("affine", inputs: [x]) { $0[0] * 3 + 1 }
    }

    func testReductions() {
        let x = randomTensor([2, 3, 5], seed: 70)
        for ax in [0, 1, 2, -1] {
            gradCheck("sum\(ax)", inputs: [x]) { $0[0].sum(axis: ax) }
            gradCheck("mean\(ax)", inputs: [x]) { $0[0].mean(axis: ax, keepDims: true) }
            gradCheck("max\(ax)", inputs: [x]) { $0[0].max(axis: ax) }
        }
        gradCheck("sumall", inputs: [x]) { $0[0].sum() }
    }

    func testNormalizationAndSoftmax() {
        gradCheck("layernorm", inputs: [randomTensor([3, 7], seed: 80), randomTensor([7], seed: 81), randomTensor([7], seed: 82)]) {
            $0[0].layerNorm($0[1], $0[2], eps: 1e-6)
        }
        gradCheck("softmax", inputs: [randomTensor([3, 5], seed: 83)]) { $0[0].softmax() }
        gradCheck("logsoftmax", inputs: [randomTensor([3, 5], seed: 84)]) { $0[0].logSoftmax() }
        gradCheck("l2norm", inputs: [randomTensor([4, 6], seed: 85)]) { $0[0].l2Normalized() }
    }

    func testShapeOps() {
        let x = randomTensor([2, 3, 4], seed: 90)
        gradCheck("permute", inputs: [x]) { $0[0].permuted([2, 0, 1]) }
        // A non-contiguous (transposed) input feeding a linear layer.
        gradCheck("transposed-linear", inputs: [x, randomTensor([5, 2], seed: 91)]) { $0[0].transposed(0, 2).linear($0[1], nil) }
        gradCheck("slice", inputs: [x]) { $0[0].slice(axis: 1, 1..<3) }
        gradCheck("select", inputs: [x]) { $0[0].select(axis: 1, 0) }
        gradCheck("reshape", inputs: [x]) { $0[0].reshaped([4, -1]) }
        gradCheck("concat", inputs: [x, randomTensor([2, 2, 4], seed: 92)]) { Tensor.concat([$0[0], $0[1]], axis: 1) }
        gradCheck("gather", inputs: [x]) { $0[0].gatherRows([1, 0, 1, 1]) }
    }

    func testAttention() {
        // Self-attention with a mask that hides keys (rows still attend to valid ones).
        let q = randomTensor([2, 3, 4], seed: 100), k = randomTensor([2, 5, 4], seed: 101), v = randomTensor([2, 5, 4], seed: 102)
        let mask = Tensor([0, 0, -10000, 0, -10000, 0, 0, 0, 0, -10000], shape: [2, 5])
        gradCheck("cross-attn-masked", inputs: [q, k, v]) { Tensor.attention(q: $0[0], k: $0[1], v: $0[2], heads: 2, mask: mask, scale: 0.5) }
        let x = randomTensor([2, 4, 6], seed: 103)
        gradCheck("self-attn-shared", inputs: [x]) { Tensor.attention(q: $0[0], k: $0[0], v: $0[0], heads: 3, mask: nil, scale: 0.7) }
        gradCheck("packed-qkv", inputs: [randomTensor([2, 3, 12], seed: 104)]) { Tensor.attention(packedQKV: $0[0], heads: 2, scale: 0.5) }
        // Attention-probability dropout: a fixed seed gives the same mask on every call.
        gradCheck("attn-dropout", inputs: [q, k, v]) {
            Tensor.attention(q: $0[0], k: $0[1], v: $0[2], heads: 2, mask: mask, scale: 0.5, dropout: (0.3, 77))
        }
        let plain = Tensor.attention(q: q, k: k, v: v, heads: 2, mask: mask, scale: 0.5).scalars
        let dropped = Tensor.attention(q: q, k: k, v: v, heads: 2, mask: mask, scale: 0.5, dropout: (0.3, 77)).scalars
        XCTAssertNotEqual(plain, dropped)
        XCTAssertEqual(dropped, Tensor.attention(q: q, k: k, v: v, heads: 2, mask: mask, scale: 0.5, dropout: (0.3, 77)).scalars)
    }

    func testLossesAndEmbedding() {
        let logits = randomTensor([5, 4], seed: 110)
        gradCheck("ce-ignore", inputs: [logits]) { $0[0].crossEntropy(labels: [1, -100, 3, 0, -100]) }
        var rng = RandomGenerator(seed: 111)
        let t = Tensor((0..<20).map { _ in rng.nextFloat() }, shape: [5, 4])
        gradCheck("soft-ce", inputs: [logits]) { $0[0].softCrossEntropy(targets: t) }
        let table = randomTensor([6, 3], seed: 112)
        gradCheck("embedding", inputs: [table]) { $0[0].embedding([1, 0, 5, 1], shape: [2, 2], paddingIndex: nil) }
        // The padding row gets no gradient from the lookup.
        table.gradStorage = nil
        table.embedding([0, 2], shape: [2], paddingIndex: 0).sum().backward()
        XCTAssertEqual(table.grad!.scalars[0..<3], [0, 0, 0])
        XCTAssertEqual(table.grad!.scalars[6..<9], [1, 1, 1])
    }

    func testAllIgnoredCrossEntropyIsFiniteZero() {
        let logits = randomTensor([3, 4], seed: 120)
        logits.requiresGrad = true
        let l = logits.crossEntropy(labels: [-100, -100, -100])
        XCTAssertEqual(l.item, 0)
        l.backward()
        XCTAssertTrue(logits.grad!.scalars.allSatisfy { $0 == 0 })
    }

    func testTwoThreadsStillPass() {
        Threading.setThreads(2)
        defer { Threading.setThreads(1) }
        gradCheck("layernorm-2t", inputs: [randomTensor([9, 5], seed: 130), randomTensor([5], seed: 131), randomTensor([5], seed: 132)]) {
            $0[0].layerNorm($0[1], $0[2], eps: 1e-12)
        }
        gradCheck("attn-2t", inputs: [randomTensor([3, 4, 6], seed: 133)]) { Tensor.attention(packedQKV: $0[0].linear(randomTensor([18, 6], seed: 5), nil), heads: 2, scale: 0.5) }
        gradCheck("softmax-2t", inputs: [randomTensor([7, 3], seed: 134)]) { $0[0].softmax() }
    }

    func testDropoutAndNoGrad() {
        var r1 = RandomGenerator(seed: 5), r2 = RandomGenerator(seed: 5)
        let x = randomTensor([50], seed: 140)
        let a = x.dropout(0.3, rng: &r1).scalars, b = x.dropout(0.3, rng: &r2).scalars
        XCTAssertEqual(a, b)
        XCTAssertTrue(a.contains(0))
        x.requiresGrad = true
        let y = withNoGrad { x.gelu() }
        XCTAssertNil(y.backwardFn)
        XCTAssertTrue(y.parents.isEmpty)
    }
}
