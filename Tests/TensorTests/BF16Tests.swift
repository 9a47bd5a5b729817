import CKernels
import XCTest
@testable import Tensor

/// bf16 mixed precision: the rounding kernel, the oneDNN GEMM, the bf16 linear and attention
/// kernels (each gradient-checked), the weight cache and the fp32 fallback.
///
/// Tolerances: bf16 keeps 8 significant bits, unit roundoff u = 2⁻⁸ ≈ 3.9e-3. A product of two
/// rounded operands is exact in fp32 (8 + 8 bits), so a bf16 GEMM equals the fp32 GEMM of the
/// rounded operands up to fp32 accumulation (≈ K·2⁻²⁴ relative to Σ|a·b|); against the
/// unrounded math each product is off by ≤ 2u relative, i.e. a GEMM result by ≤ 2u·Σ|a·b|.
final class BF16Tests: XCTestCase {
    override func setUp() {
        Threading.setThreads(1)
    }

    override func tearDown() {
        MatmulPrecision.simulateNoBF16 = false
        MatmulPrecision.set(.fp32)
        ck_limit_simd_level(3)
    }

    func requireBF16() throws {
        guard MatmulPrecision.set(.bf16) == nil else { throw XCTSkip("this CPU has no bf16 GEMM backend: \(MatmulPrecision.cpu)") }
        MatmulPrecision.set(.fp32)
    }

    /// Round to nearest even on the bit pattern, written independently of the C kernel.
    static func referenceBF16(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        if x.isNaN { return UInt16(u >> 16) | 0x40 }
        let lower = u & 0xffff, upper = u >> 16
        if lower > 0x8000 || (lower == 0x8000 && upper & 1 == 1) { return UInt16(truncatingIfNeeded: upper &+ 1) }
        return UInt16(upper)
    }

    func testRoundingIsNearestEvenOnEveryPath() {
        var values: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .nan, -.nan, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                               .leastNonzeroMagnitude, .leastNormalMagnitude, 1 + 1 / 256, 1 + 1 / 128 + 1 / 256, 1 + 3 / 512,
                               Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3f81_8000), Float(bitPattern: 0x3f80_8001),
                               Float(bitPattern: 0x7f7f_ffff), Float(bitPattern: 0x7fa0_0000), 3.14159, -2.71828e-20]
        var rng = RandomGenerator(seed: 5)
        for _ in 0..<100_003 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.nextUInt64()))) }
        let expected = values.map(Self.referenceBF16)
        for level in [3, 0] {
            ck_limit_simd_level(Int32(level))
            var got = [UInt16](repeating: 0, count: values.count)
            values.withUnsafeBufferPointer { src in got.withUnsafeMutableBufferPointer { ck_f32_to_bf16($0.baseAddress!, src.baseAddress!, 0, values.count) } }
            let bad = (0..<values.count).first { got[$0] != expected[$0] }
            XCTAssertNil(bad, "simd level \(level): \(bad.map { "\(values[$0]) (0x\(String(values[$0].bitPattern, radix: 16))) → 0x\(String(got[$0], radix: 16)), expected 0x\(String(expected[$0], radix: 16))" } ?? "")")
        }
        ck_limit_simd_level(3)
        XCTAssertEqual(roundedToBF16(1 + 1 / 256), 1, "a tie rounds to even")
        XCTAssertEqual(roundedToBF16(1 + 3 / 512), 1 + 1 / 128)
        XCTAssertTrue(roundedToBF16(.nan).isNaN)
        XCTAssertEqual(roundedToBF16(.greatestFiniteMagnitude), .infinity, "beyond bf16's largest finite value")
        // The threaded strided conversion packs the columns a view reads.
        let src = (0..<(5 * 7)).map { Float($0) * 1.001 }
        let b = src.withUnsafeBufferPointer { BF16Buffer(converting: $0.baseAddress! + 2, rows: 5, cols: 4, lds: 7) }
        XCTAssertEqual(b.floats, (0..<5).flatMap { r in (0..<4).map { roundedToBF16(src[r * 7 + 2 + $0]) } })
    }

    /// `bf16gemm` = the float64 GEMM of the (exactly representable) bf16 operands, up to fp32
    /// accumulation, for every transpose, strided leading dimensions, alpha, beta and thread count.
    func testGemmMatchesFloat64OnBF16Operands() throws {
        try requireBF16()
        var rng = RandomGenerator(seed: 11)
        for threads in [1, 2] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let cases: [(Int, Int, Int, Int, Float, Float)] = [(7, 9, 13, 0, 1, 0), (33, 17, 70, 3, 0.125, 1), (64, 96, 128, 0, 1, 1), (1, 5, 300, 2, -2, 0)]
                for (m, n, k, pad, alpha, beta) in cases {
                    let ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n
                    let lda = ac + pad, ldb = bc + pad, ldc = n + pad
                    let a = (0..<(ar * lda)).map { _ in roundedToBF16(rng.normal()) }
                    let b = (0..<(br * ldb)).map { _ in roundedToBF16(rng.normal()) }
                    let c0 = (0..<(m * ldc)).map { _ in rng.normal() }
                    let ab = a.withUnsafeBufferPointer { BF16Buffer(converting: $0.baseAddress!, count: a.count) }
                    let bb = b.withUnsafeBufferPointer { BF16Buffer(converting: $0.baseAddress!, count: b.count) }
                    var c = c0
                    c.withUnsafeMutableBufferPointer {
                        bf16gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: ab.pointer, lda: lda, b: bb.pointer, ldb: ldb,
                                 beta: beta, c: $0.baseAddress!, ldc: ldc, threads: threads)
                    }
                    var worst = 0.0
                    for i in 0..<m {
                        for j in 0..<n {
                            var s = 0.0, mag = 0.0
                            for p in 0..<k {
                                let x = Double(ta ? a[p * lda + i] : a[i * lda + p]), y = Double(tb ? b[j * ldb + p] : b[p * ldb + j])
                                s += x * y; mag += abs(x * y)
                            }
                            let ref = Double(alpha) * s + Double(beta) * Double(c0[i * ldc + j])
                            let scale = abs(Double(alpha)) * mag + abs(Double(beta) * Double(c0[i * ldc + j])) + 1e-30
                            worst = max(worst, abs(Double(c[i * ldc + j]) - ref) / scale)
                        }
                        for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], c0[i * ldc + j], "padding column written") }
                    }
                    XCTAssertLessThan(worst, Double(k + 2) * 6e-8, "ta \(ta) tb \(tb) \(m)x\(n)x\(k) pad \(pad) α \(alpha) β \(beta) threads \(threads)")
                }
            }
        }
        let impl = try OneDNN.implementation(transB: true, m: 64, n: 96, k: 128, lda: 128, ldb: 128, ldc: 96)
        print("bf16 gemm 64x96x128 runs oneDNN \(impl)")
        XCTAssertFalse(impl.hasPrefix("ref"), "oneDNN's reference (unoptimised) matmul: \(impl)")
    }

    /// The bf16 linear kernels compute exactly what fp32 linear computes on bf16-rounded
    /// operands (up to fp32 accumulation); the bias and its gradient stay fp32 (bit-identical).
    func testLinearKernelsEqualFP32OnRoundedOperands() throws {
        try requireBF16()
        let n = 37, i = 45, o = 29
        let x = randomTensor([n, i], seed: 1), w = randomTensor([o, i], seed: 2), bias = randomTensor([o], seed: 3), g = randomTensor([n, o], seed: 4)
        func rounded(_ t: Tensor) -> Tensor { Tensor(t.scalars.map(roundedToBF16), shape: t.shape) }
        let xr = rounded(x), wr = rounded(w), gr = rounded(g)
        let wb = BF16Buffer(converting: w.data, count: w.count)
        let out16 = Tensor(zeros: [n, o]), out32 = Tensor(zeros: [n, o])
        linearForwardBF16(out: out16.data, inp: x.data, weight: wb.pointer, ldw: i, bias: bias.data, n: n, inFeatures: i, outFeatures: o)
        linearForward(out: out32.data, inp: xr.data, weight: wr.data, bias: bias.data, n: n, inFeatures: i, outFeatures: o)
        assertClose(out16.scalars, out32.scalars, atol: 2e-5, rtol: 2e-5, "forward")
        let dx16 = Tensor(zeros: [n, i]), dw16 = Tensor(zeros: [o, i]), db16 = Tensor(zeros: [o])
        let dx32 = Tensor(zeros: [n, i]), dw32 = Tensor(zeros: [o, i]), db32 = Tensor(zeros: [o])
        linearBackwardBF16(dinp: dx16.data, dweight: dw16.data, dbias: db16.data, dout: g.data, inp: x.data, weight: wb.pointer, ldw: i, n: n, inFeatures: i, outFeatures: o)
        linearBackward(dinp: dx32.data, dweight: dw32.data, dbias: nil, dout: gr.data, inp: xr.data, weight: wr.data, n: n, inFeatures: i, outFeatures: o)
        linearBackward(dinp: nil, dweight: nil, dbias: db32.data, dout: g.data, inp: x.data, weight: w.data, n: n, inFeatures: i, outFeatures: o)
        assertClose(dx16.scalars, dx32.scalars, atol: 2e-5, rtol: 2e-5, "dinp")
        assertClose(dw16.scalars, dw32.scalars, atol: 2e-5, rtol: 2e-5, "dweight")
        XCTAssertEqual(db16.scalars, db32.scalars, "bias gradient is fp32")
        XCTAssertNotEqual(out16.scalars, Tensor(zeros: [n, o]).scalars)
        withExtendedLifetime(wb) {}
    }

    /// Gradient check for bf16 ops: autograd gradients in bf16 against central differences of
    /// the fp32 function the bf16 kernels approximate. A layout or transpose bug is an O(1)
    /// error; bf16 rounding (a few GEMM stages, each ≤ 2u·Σ|terms|) stays within
    /// 0.05·|g| + 0.02·max|g| of the tensor.
    func bf16GradCheck(_ name: String, inputs: [Tensor], eps: Float = 1e-2, file: StaticString = #filePath, line: UInt = #line,
                       _ f: ([Tensor]) -> Tensor) {
        var rng = RandomGenerator(seed: 99)
        for t in inputs { t.requiresGrad = true; t.gradStorage = nil }
        MatmulPrecision.set(.bf16)
        let y0 = f(inputs)
        let r = (0..<y0.count).map { _ in rng.uniform(Float(-1), Float(1)) }
        (y0 * Tensor(r, shape: y0.shape)).sum().backward()
        let g16 = inputs.map { $0.grad?.scalars ?? [] }
        // The same gradient in fp32, to show the bf16 path ran (it must differ).
        MatmulPrecision.set(.fp32)
        for t in inputs { t.gradStorage = nil }
        let y1 = f(inputs)
        (y1 * Tensor(r, shape: y1.shape)).sum().backward()
        let g32 = inputs.map { $0.grad?.scalars ?? [] }
        XCTAssertNotEqual(g16, g32, "\(name): bf16 gradients equal fp32's bit for bit (bf16 path not taken?)", file: file, line: line)
        func loss() -> Double {
            withNoGrad {
                let y = f(inputs)
                var s = 0.0
                for i in 0..<y.count { s += Double(y.data[i]) * Double(r[i]) }
                return s
            }
        }
        for (k, t) in inputs.enumerated() {
            let g = g16[k]
            guard g.count == t.count else { XCTFail("\(name): input \(k) got no gradient", file: file, line: line); continue }
            var num = [Float](repeating: 0, count: t.count)
            for i in 0..<t.count {
                let old = t.data[i]
                t.data[i] = old + eps; let lp = loss()
                t.data[i] = old - eps; let lm = loss()
                t.data[i] = old
                num[i] = Float((lp - lm) / Double(2 * eps))
            }
            let scale = num.map(abs).max() ?? 0
            var worst: (Float, Int) = (0, -1)
            for i in 0..<t.count {
                let err = abs(num[i] - g[i]) - (0.05 * max(abs(num[i]), abs(g[i])) + 0.02 * scale + 1e-4)
                if err > worst.0 { worst = (err, i) }
            }
            XCTAssertLessThan(worst.1, 0, "\(name): input \(k) \(t.shape) element \(worst.1): numeric \(worst.1 >= 0 ? num[worst.1] : 0) vs bf16 autograd \(worst.1 >= 0 ? g[worst.1] : 0)",
                              file: file, line: line)
        }
    }

    func testLinearOpsGradCheckInBF16() throws {
        try requireBF16()
        bf16GradCheck("linear", inputs: [randomTensor([2, 3, 5], seed: 1), randomTensor([7, 5], seed: 2), randomTensor([7], seed: 3)]) { $0[0].linear($0[1], $0[2]) }
        bf16GradCheck("linear-nobias", inputs: [randomTensor([3, 4], seed: 4), randomTensor([2, 4], seed: 5)]) { $0[0].linear($0[1], nil) }
        bf16GradCheck("geluLinear", inputs: [randomTensor([4, 6], seed: 6), randomTensor([5, 6], seed: 7), randomTensor([5], seed: 8)]) { $0[0].geluLinear($0[1], $0[2]) }
        bf16GradCheck("layerNormLinear", inputs: [randomTensor([3, 8], seed: 9), randomTensor([8], seed: 10), randomTensor([8], seed: 11),
                                                  randomTensor([5, 8], seed: 12), randomTensor([5], seed: 13)]) {
            $0[0].layerNormLinear($0[1], $0[2], eps: 1e-6, $0[3], $0[4])
        }
        bf16GradCheck("addingLinear-gelu", inputs: [randomTensor([3, 5], seed: 14), randomTensor([3, 7], seed: 15), randomTensor([5, 7], seed: 16),
                                                    randomTensor([5], seed: 17)]) { $0[0].addingLinear($0[1], $0[2], $0[3], gelu: true) }
        bf16GradCheck("addingLinear-dropout", inputs: [randomTensor([3, 5], seed: 18), randomTensor([3, 7], seed: 19), randomTensor([5, 7], seed: 20), randomTensor([5], seed: 21)]) {
            var rng = RandomGenerator(seed: 3)
            return $0[0].addingLinear($0[1], $0[2], $0[3], dropout: 0.3, rng: &rng)
        }
    }

    func testAttentionGradCheckInBF16() throws {
        try requireBF16()
        let q = randomTensor([2, 3, 4], seed: 100), k = randomTensor([2, 5, 4], seed: 101), v = randomTensor([2, 5, 4], seed: 102)
        let mask = Tensor([0, 0, -10000, 0, -10000, 0, 0, 0, 0, -10000], shape: [2, 5])
        bf16GradCheck("cross-attn-masked", inputs: [q, k, v]) { Tensor.attention(q: $0[0], k: $0[1], v: $0[2], heads: 2, mask: mask, scale: 0.5) }
        bf16GradCheck("self-attn-shared", inputs: [randomTensor([2, 4, 6], seed: 103)]) { Tensor.attention(q: $0[0], k: $0[0], v: $0[0], heads: 3, mask: nil, scale: 0.7) }
        bf16GradCheck("packed-qkv", inputs: [randomTensor([2, 3, 12], seed: 104)]) { Tensor.attention(packedQKV: $0[0], heads: 2, scale: 0.5) }
        bf16GradCheck("attn-dropout", inputs: [q, k, v]) { Tensor.attention(q: $0[0], k: $0[1], v: $0[2], heads: 2, mask: mask, scale: 0.5, dropout: (0.3, 77)) }
        Tensor.keepAttentionProbabilities = true
        defer { Tensor.keepAttentionProbabilities = false }
        bf16GradCheck("attn-kept-probs", inputs: [q, k, v]) { Tensor.attention(q: $0[0], k: $0[1], v: $0[2], heads: 2, mask: mask, scale: 0.5) }
    }

    /// Two threads split the heads (oneDNN runs one thread inside each) and give the same result.
    func testAttentionIsTheSameOnTwoThreads() throws {
        try requireBF16()
        let qkv = randomTensor([3, 17, 3 * 64], seed: 7)
        let run: () -> ([Float], [Float]) = {
            qkv.gradStorage = nil
            qkv.requiresGrad = true
            let y = Tensor.attention(packedQKV: qkv, heads: 4, scale: 0.125)
            (y * y).sum().backward()
            return (y.scalars, qkv.grad!.scalars)
        }
        MatmulPrecision.set(.bf16)
        Threading.setThreads(1)
        let one = run()
        Threading.setThreads(2)
        let two = run()
        Threading.setThreads(1)
        XCTAssertEqual(one.0, two.0)
        XCTAssertEqual(one.1, two.1)
    }

    /// Attention's and `addingLinear`'s saved inputs converted to bf16 in their own memory for
    /// the backward (the caller passed its only reference: a projection's fresh output) give the
    /// same bits as keeping the fp32 inputs (`keep-fp32-inputs`): outputs and every gradient, for
    /// separate q/k/v (masked, with dropout), a packed qkv large enough that its tail pages are
    /// returned, and attention feeding a projection. An input the caller still holds is not
    /// touched, and so is one whose producer's backward reads it (softmax); nothing is converted
    /// without a gradient or for an fp32 weight gradient.
    func testAttentionInPlaceInputsMatchKept() throws {
        try requireBF16()
        let saved = MatmulPrecision.ablations
        defer { MatmulPrecision.ablations = saved; MatmulPrecision.set(.fp32) }
        MatmulPrecision.set(.bf16)
        let c = 256, l = 64
        let x = randomTensor([2, l, c], seed: 40), mem = randomTensor([2, 9, c], seed: 41)
        let wq = randomTensor([c, c], seed: 42, scale: 0.05), wk = randomTensor([c, c], seed: 43, scale: 0.05)
        let wv = randomTensor([c, c], seed: 44, scale: 0.05), wqkv = randomTensor([3 * c, c], seed: 45, scale: 0.05)
        let bias = randomTensor([3 * c], seed: 46)
        var maskValues = [Float](repeating: 0, count: 18)
        maskValues[4] = -10000; maskValues[16] = -10000
        let mask = Tensor(maskValues, shape: [2, 9])
        let leaves = [x, mem, wq, wk, wv, wqkv, bias]
        func run(_ f: () -> Tensor) -> [[Float]] {
            for t in leaves { t.requiresGrad = true; t.gradStorage = nil }
            let y = f()
            (y * y).sum().backward()
            return [y.scalars] + leaves.map { $0.grad?.scalars ?? [] }
        }
        let cross = {
            Tensor.attention(q: x.linear(wq, nil), k: mem.linear(wk, nil), v: mem.linear(wv, nil), heads: 4, mask: mask,
                             scale: 0.125, dropout: (0.2, 5))
        }
        let packed = { Tensor.attention(packedQKV: x.linear(wqkv, bias), heads: 4, scale: 0.125) }
        // A ViT block's attention half: the context goes straight into the output projection.
        let block = { x.addingLinear(Tensor.attention(packedQKV: x.linear(wqkv, bias), heads: 4, scale: 0.125), wq, nil) }
        for (name, f, tensors) in [("cross", cross, 3), ("packed", packed, 1), ("block", block, 2)] {
            MatmulPrecision.ablations = ["keep-fp32-inputs"]
            _ = ReleasedActivations.take()
            let keptFP32 = run(f)
            XCTAssertEqual(ReleasedActivations.take().tensors, 0, "\(name): the ablation converts nothing in place")
            MatmulPrecision.ablations = []
            let inPlace = run(f)
            let r = ReleasedActivations.take()
            XCTAssertEqual(r.tensors, tensors, "\(name): inputs converted in place")
            XCTAssertEqual(inPlace, keptFP32, "\(name): outputs and gradients")
            if name == "packed" {
                XCTAssertEqual(r.keptBF16, 2 * l * 3 * c * 2, "packed: bf16 bytes kept")
                XCTAssertGreaterThan(r.returned, 0, "packed: its 384 KiB buffer's second half goes back to the system")
            }
        }
        // q held by the caller (read again below) stays fp32; k and v are converted.
        func held(_ ablations: Set<String>) -> (outputs: [[Float]], converted: Int) {
            MatmulPrecision.ablations = ablations
            var converted = 0
            let outputs = run {
                let q = x.linear(wq, nil)
                let before = q.scalars
                let y = Tensor.attention(q: q, k: mem.linear(wk, nil), v: mem.linear(wv, nil), heads: 4, mask: mask, scale: 0.125)
                converted = ReleasedActivations.take().tensors
                XCTAssertFalse(q.isStorageReleased)
                XCTAssertEqual(q.scalars, before, "held q: its values untouched")
                return y
            }
            return (outputs, converted)
        }
        let heldInPlace = held([]), heldKept = held(["keep-fp32-inputs"])
        XCTAssertEqual(heldInPlace.converted, 2, "held q: only k and v converted")
        XCTAssertEqual(heldKept.converted, 0)
        XCTAssertEqual(heldInPlace.outputs, heldKept.outputs, "held q: the same bits")
        // Without a gradient nothing is kept, so nothing is converted.
        MatmulPrecision.ablations = []
        for t in leaves { t.requiresGrad = false; t.gradStorage = nil }
        _ = Tensor.attention(packedQKV: x.linear(wqkv, bias), heads: 4, scale: 0.125)
        XCTAssertEqual(ReleasedActivations.take().tensors, 0, "no grad: nothing converted")
        for t in leaves { t.requiresGrad = true; t.gradStorage = nil }
        wq.weightGradFP32 = true
        defer { wq.weightGradFP32 = false }
        let y = x.addingLinear(x.linear(wk, nil), wq, nil)
        (y * y).sum().backward()
        XCTAssertEqual(ReleasedActivations.take().tensors, 0, "fp32 weight gradient: the fp32 input kept")
        // A softmax output's own backward reads its values: never converted, even as a sole reference.
        for t in leaves { t.gradStorage = nil }
        let z = Tensor.attention(q: x.linear(wq, nil).softmax(), k: mem.linear(wk, nil), v: mem.linear(wv, nil), heads: 4,
                                 mask: mask, scale: 0.125)
        (z * z).sum().backward()
        XCTAssertEqual(ReleasedActivations.take().tensors, 2, "softmax output: only k and v converted")
        XCTAssertNotNil(x.grad)
    }

    /// Cached bf16 weights: one conversion serves every forward and the backward of a step; the
    /// first forward after a backward reconverts (the optimizer may have changed the weights);
    /// `invalidate()` after changing weights by hand; unpacked or frozen weights are never cached.
    func testWeightCacheGenerations() throws {
        try requireBF16()
        MatmulPrecision.set(.bf16)
        let flat = Storage(count: 6 * 5)
        let w = Tensor(shape: [6, 5], storage: Storage(borrowing: flat.pointer, count: 30, owner: flat), requiresGrad: true)
        var rng = RandomGenerator(seed: 1)
        for i in 0..<30 { w.data[i] = rng.normal() }
        let x = randomTensor([4, 5], seed: 2)
        let c0 = BF16Weights.counters
        let y1 = x.linear(w, nil).scalars
        _ = x.linear(w, nil)
        var c = BF16Weights.counters
        XCTAssertEqual(c.conversions - c0.conversions, 1, "two forwards, one conversion")
        XCTAssertEqual(c.hits - c0.hits, 1)
        // Changed by hand without a backward: stale until invalidate().
        for i in 0..<30 { w.data[i] *= 2 }
        XCTAssertEqual(x.linear(w, nil).scalars, y1, "the cached copy is used within a generation")
        BF16Weights.invalidate()
        let y2 = x.linear(w, nil).scalars
        XCTAssertEqual(y2, y1.map { $0 * 2 }, "after invalidate the new values are used (×2 is exact in bf16)")
        // A backward (x needs a gradient, so W is read) then an update then a forward: reconverted.
        x.requiresGrad = true
        x.linear(w, nil).sum().backward()
        for i in 0..<30 { w.data[i] *= 0.5 }
        c = BF16Weights.counters
        XCTAssertEqual(x.linear(w, nil).scalars, y1, "the forward after a backward reconverts")
        XCTAssertEqual(BF16Weights.counters.conversions - c.conversions, 1)
        // Frozen (momentum) and pooled (unpacked) weights: converted at every call.
        let frozen = Tensor(shape: [6, 5], storage: w.storage)
        let pooled = randomTensor([6, 5], seed: 3)
        pooled.requiresGrad = true
        c = BF16Weights.counters
        _ = withNoGrad { x.linear(frozen, nil) }
        _ = withNoGrad { x.linear(frozen, nil) }
        _ = x.linear(pooled, nil)
        _ = x.linear(pooled, nil)
        XCTAssertEqual(BF16Weights.counters.conversions - c.conversions, 4)
        XCTAssertEqual(BF16Weights.counters.hits, c.hits)
        BF16Weights.clear()
        XCTAssertEqual(BF16Weights.cachedBytes, 0)
    }

    /// bf16 temporaries come from the thread's scratch arena, not the buffer pool: a set that
    /// does not fit gets allocations of their own, the block grows to the whole set when the
    /// arena empties, and from then on the same set reuses the block from its start (same
    /// addresses, nothing allocated); a buffer given back on another thread counts too.
    func testScratchArenaReusesItsBlock() {
        let arena = ScratchArena()
        func set() -> [UnsafeMutableRawPointer] {
            let a = arena.take(1000), b = arena.take(5000), c = arena.take(64)
            XCTAssertEqual(Int(bitPattern: a.pointer) % 64, 0)
            XCTAssertEqual(Int(bitPattern: b.pointer) % 64, 0)
            defer { for (x, n) in [(a, 1000), (b, 5000), (c, 64)] { arena.give(x.pointer, inBlock: x.inBlock, bytes: n) } }
            return [a.pointer, b.pointer, c.pointer]
        }
        let blockBefore = ScratchArena.blockBytes
        _ = set()  // no block yet: three allocations of their own
        XCTAssertGreaterThanOrEqual(ScratchArena.blockBytes - blockBefore, 1024 + 5056 + 64, "grown to the whole set")
        let first = set(), second = set()
        XCTAssertEqual(first, second, "the block is reused from its start")
        XCTAssertEqual(Int(bitPattern: first[1]) - Int(bitPattern: first[0]), 1024, "bump allocation, 64-byte rounded")
        // Given back from another thread.
        let t = arena.take(100)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let p = t.pointer
        Thread { arena.give(p, inBlock: t.inBlock, bytes: 100); done.signal() }.start()
        done.wait()
        XCTAssertEqual(set(), first, "emptied by the other thread's give")
        // BF16Buffer temporaries leave the pool alone.
        let x = randomTensor([64, 33], seed: 9)
        let live = BufferPool.shared.liveBytes
        let b = BF16Buffer(converting: x.data, count: x.count)
        XCTAssertTrue(b.isScratch)
        XCTAssertEqual(BufferPool.shared.liveBytes, live)
        XCTAssertEqual(b.floats, x.scalars.map(roundedToBF16))
    }

    /// Splitting a weight in place and joining it back gives back every bit (random values and
    /// the edge cases: zeros, subnormals, ±Inf, the largest finite value, every low half at and
    /// around the tie); each row is its bf16 high halves then its int16 low halves; the high half
    /// is round-to-nearest-even except at exact ties, which go away from zero.
    func testWeightSplitRoundTrip() {
        let rows = 7, cols = 37
        var rng = RandomGenerator(seed: 9)
        var values = (0..<(rows * cols)).map { _ in rng.normal() * 0.05 }
        let specials: [UInt32] = [0, 0x8000_0000, 0x0000_0001, 0x8000_8000, 0x7f80_0000, 0xff80_0000, 0x7f7f_ffff,
                                  0x3f80_8000, 0x3f81_8000, 0xbf80_8000, 0x3f80_7fff, 0x3f80_ffff, 0xbf80_ffff, 0x007f_8000]
        for (i, u) in specials.enumerated() { values[i * 3] = Float(bitPattern: u) }
        let w = Storage(count: rows * cols)
        w.pointer.update(from: values, count: values.count)
        var tmp = [Float](repeating: 0, count: cols)
        ck_bf16_split_rows(w.pointer, cols, 0, rows, &tmp)
        let halves = UnsafeRawPointer(w.pointer).assumingMemoryBound(to: UInt16.self)
        for r in 0..<rows {
            for c in 0..<cols {
                let x = values[r * cols + c], u = x.bitPattern
                let hi = halves[r * 2 * cols + c], lo = Int16(bitPattern: halves[r * 2 * cols + cols + c])
                XCTAssertEqual(UInt32(hi) << 16 &+ UInt32(bitPattern: Int32(lo)), u, "split of \(x) (\(String(u, radix: 16)))")
                if u & 0xffff == 0x8000 {
                    XCTAssertEqual(hi, UInt16(truncatingIfNeeded: (u >> 16) &+ 1), "a tie goes away from zero")
                } else if !(x.isNaN || u & 0x7fff_ffff == 0x7f7f_ffff) {
                    XCTAssertEqual(hi, Self.referenceBF16(x), "high half of \(x) is its bf16 rounding")
                }
            }
        }
        ck_bf16_join_rows(w.pointer, cols, 0, rows, &tmp)
        XCTAssertEqual((0..<values.count).map { w.pointer[$0].bitPattern }, values.map(\.bitPattern), "join restores every bit")
        // The copy `no-weight-split` caches: the same high halves (and low halves), rows 2I apart.
        let t = Tensor(shape: [rows, cols], storage: Storage(borrowing: w.pointer, count: rows * cols, owner: w), requiresGrad: true)
        t.bf16Splittable = true
        let copy = BF16Weights.cachedOperand(t, backward: false, splitLayout: true)
        defer { BF16Weights.clear() }
        ck_bf16_split_rows(w.pointer, cols, 0, rows, &tmp)
        XCTAssertEqual(copy.count, 2 * rows * cols)
        for i in 0..<(2 * rows * cols) { XCTAssertEqual(copy.pointer[i], halves[i]) }
    }

    /// A packed linear weight (`bf16Splittable`) is split in place by its first bf16 GEMM (no
    /// copy cached), gives the same outputs and gradients as the `no-weight-split` copy, and is
    /// joined back to its exact fp32 bits by the fp32 path, by an embedding lookup of the same
    /// table (the tied MLM decoder) and by `joinAll`.
    func testLinearWeightSplitInPlace() throws {
        try requireBF16()
        let saved = MatmulPrecision.ablations
        MatmulPrecision.set(.bf16)
        defer { MatmulPrecision.ablations = saved; MatmulPrecision.set(.fp32); BF16Weights.clear() }
        let flat = Storage(count: 6 * 40)
        let w = Tensor(shape: [6, 40], storage: Storage(borrowing: flat.pointer, count: 240, owner: flat), requiresGrad: true)
        w.bf16Splittable = true
        var rng = RandomGenerator(seed: 4)
        for i in 0..<240 { w.data[i] = rng.normal() * 0.1 }
        let original = (0..<240).map { w.data[$0].bitPattern }
        let x = randomTensor([5, 40], seed: 5)
        x.requiresGrad = true
        func run() -> (y: [Float], gx: [Float], gw: [Float]) {
            x.zeroGrad(); w.zeroGrad()
            let y = x.linear(w, nil)
            y.sum().backward()
            return (y.scalars, x.grad!.scalars, w.grad!.scalars)
        }
        MatmulPrecision.ablations = []
        let cached0 = BF16Weights.cachedBytes
        let split = run()
        XCTAssertTrue(BF16Weights.isSplit(w.data), "the bf16 GEMM split the weight")
        XCTAssertEqual(BF16Weights.cachedBytes, cached0, "no copy cached for a split weight")
        XCTAssertNotEqual((0..<240).map { w.data[$0].bitPattern }, original, "the memory holds the halves now")
        BF16Weights.joinAll()
        XCTAssertFalse(BF16Weights.isSplit(w.data))
        XCTAssertEqual((0..<240).map { w.data[$0].bitPattern }, original, "joined: every fp32 bit back")
        MatmulPrecision.ablations = ["no-weight-split"]
        let copy = run()
        XCTAssertFalse(BF16Weights.isSplit(w.data))
        XCTAssertEqual(split.y, copy.y, "outputs: split = cached copy")
        XCTAssertEqual(split.gx, copy.gx)
        XCTAssertEqual(split.gw, copy.gw)
        BF16Weights.clear()
        MatmulPrecision.ablations = []
        // The fp32 path and the embedding lookup join a split weight before reading it.
        _ = x.linear(w, nil)
        XCTAssertTrue(BF16Weights.isSplit(w.data))
        let fp32 = MatmulPrecision.inFP32 { x.linear(w, nil).scalars }
        XCTAssertFalse(BF16Weights.isSplit(w.data), "the fp32 GEMM joined it")
        XCTAssertEqual(fp32, MatmulPrecision.with(.fp32) { x.linear(w, nil).scalars }!)
        MatmulPrecision.set(.bf16)
        _ = x.linear(w, nil)
        let rows = w.embedding([3, 0], shape: [2])
        XCTAssertFalse(BF16Weights.isSplit(w.data), "the lookup joined it")
        XCTAssertEqual(rows.scalars.map(\.bitPattern), Array(original[120..<160] + original[0..<40]))
        // A weight split by another thread's graph (another rank of the process) is left alone by
        // this thread's joinAll; that thread's joinAll, or a join by address, joins it.
        nonisolated(unsafe) let (xs, ws) = (x, w)
        let done = DispatchSemaphore(value: 0)
        Thread { _ = xs.linear(ws, nil); done.signal() }.start()
        done.wait()
        XCTAssertTrue(BF16Weights.isSplit(w.data))
        BF16Weights.joinAll()
        XCTAssertTrue(BF16Weights.isSplit(w.data), "not this thread's split")
        BF16Weights.join(w.data)
        XCTAssertFalse(BF16Weights.isSplit(w.data))
        XCTAssertEqual((0..<240).map { w.data[$0].bitPattern }, original)
        // The reader's join (AdamW): each block is joined before the reader sees it, the blocks
        // cover the weight once; a count that is not the whole weight joins it and runs nothing.
        _ = x.linear(w, nil)
        let seen = Storage(count: 240, zeroed: true)
        nonisolated(unsafe) let (wp, sp) = (w.data, seen.pointer)
        XCTAssertTrue(BF16Weights.join(w.data, count: 240) { r in for i in r { sp[i] += 1; XCTAssertEqual(wp[i].bitPattern, original[i]) } })
        XCTAssertEqual((0..<240).map { seen.pointer[$0] }, [Float](repeating: 1, count: 240))
        _ = x.linear(w, nil)
        XCTAssertFalse(BF16Weights.join(w.data, count: 40) { _ in XCTFail("a partial count runs no block") })
        XCTAssertFalse(BF16Weights.isSplit(w.data))
        XCTAssertEqual((0..<240).map { w.data[$0].bitPattern }, original)
        // A non-trainable weight (a momentum encoder's) is split in a no-grad forward too, and gives the same output.
        let mflat = Storage(count: 240)
        let m = Tensor(shape: [6, 40], storage: Storage(borrowing: mflat.pointer, count: 240, owner: mflat))
        m.bf16Splittable = true
        m.data.update(from: w.data, count: 240)
        let ym = withNoGrad { x.linear(m, nil).scalars }
        XCTAssertTrue(BF16Weights.isSplit(m.data), "split like the trainable weight")
        XCTAssertEqual(ym, withNoGrad { x.linear(w, nil).scalars })
        BF16Weights.joinAll()
        XCTAssertEqual((0..<240).map { m.data[$0].bitPattern }, original)
    }

    /// An op recorded inside `MatmulPrecision.inFP32` runs its forward and its backward in fp32
    /// (bit-identical to fp32 mode) even when the backward runs after the scope closed, and an op
    /// recorded in bf16 runs its backward in bf16 even inside a later fp32 scope: each op's
    /// precision is the one of its forward. The weight cache's copies live outside the pool.
    func testFP32ScopeAndForwardCapturedPrecision() throws {
        try requireBF16()
        let x = randomTensor([5, 7], seed: 1), w = randomTensor([3, 7], seed: 2), b = randomTensor([3], seed: 3)
        for t in [x, w, b] { t.requiresGrad = true }
        let plain: (Tensor) -> Void = { $0.sum().backward() }
        func run(_ make: () -> Tensor, backward: (Tensor) -> Void) -> (y: [Float], gx: [Float], gw: [Float]) {
            for t in [x, w, b] { t.zeroGrad() }
            let y = make()
            backward(y)
            return (y.scalars, x.grad!.scalars, w.grad!.scalars)
        }
        let fp32 = run({ x.layerNormLinear(onesTensor(7), zerosTensor(7), eps: 1e-5, w, b) }, backward: plain)
        MatmulPrecision.set(.bf16)
        defer { MatmulPrecision.set(.fp32) }
        let scoped = run({ MatmulPrecision.inFP32 { x.layerNormLinear(onesTensor(7), zerosTensor(7), eps: 1e-5, w, b) } }, backward: plain)
        XCTAssertEqual(scoped.y, fp32.y, "forward in an fp32 scope = fp32 mode")
        XCTAssertEqual(scoped.gx, fp32.gx, "backward after the scope closed still fp32")
        XCTAssertEqual(scoped.gw, fp32.gw)
        let bf = run({ x.layerNormLinear(onesTensor(7), zerosTensor(7), eps: 1e-5, w, b) }, backward: plain)
        let bfLate = run({ x.layerNormLinear(onesTensor(7), zerosTensor(7), eps: 1e-5, w, b) }, backward: { y in MatmulPrecision.inFP32 { y.sum().backward() } })
        XCTAssertNotEqual(bf.y, fp32.y, "bf16 outside the scope")
        XCTAssertEqual(bfLate.gx, bf.gx, "a bf16-recorded op's backward stays bf16 inside a later fp32 scope")
        XCTAssertEqual(bfLate.gw, bf.gw)
        XCTAssertEqual(MatmulPrecision.fp32ScopeDepth, 0)
        // The attention op likewise.
        let q = randomTensor([2, 4, 8], seed: 4)
        q.requiresGrad = true
        let a32 = MatmulPrecision.with(.fp32) { Tensor.attention(q: q, k: q, v: q, heads: 2, mask: nil, scale: 0.3).scalars }!
        XCTAssertEqual(MatmulPrecision.inFP32 { Tensor.attention(q: q, k: q, v: q, heads: 2, mask: nil, scale: 0.3).scalars }, a32)
        // Cached weight copies are exact-size allocations outside the buffer pool.
        let flat = Storage(count: 6 * 5)
        let cw = Tensor(shape: [6, 5], storage: Storage(borrowing: flat.pointer, count: 30, owner: flat), requiresGrad: true)
        let live = BufferPool.shared.liveBytes
        let buffer = BF16Weights.cachedOperand(cw, backward: false, splitLayout: false)
        XCTAssertEqual(BufferPool.shared.liveBytes, live, "the cached copy takes nothing from the pool")
        XCTAssertFalse(buffer.isScratch)
        XCTAssertEqual(buffer.count, 30)
        BF16Weights.clear()
    }

    /// The half-backward ablations: `backward-dinp-fp32` gives the input gradient of fp32 mode and
    /// the weight gradient of bf16 mode, `backward-dweight-fp32` the other way round; the forward is
    /// bf16's in both.
    func testBackwardHalfAblationsSplitTheTwoGEMMs() throws {
        try requireBF16()
        let x = randomTensor([6, 9], seed: 11), w = randomTensor([4, 9], seed: 12), b = randomTensor([4], seed: 13)
        for t in [x, w, b] { t.requiresGrad = true }
        func run() -> (y: [Float], gx: [Float], gw: [Float]) {
            for t in [x, w, b] { t.zeroGrad() }
            let y = x.linear(w, b)
            (y * y).sum().backward()
            return (y.scalars, x.grad!.scalars, w.grad!.scalars)
        }
        let saved = MatmulPrecision.ablations
        defer { MatmulPrecision.ablations = saved; MatmulPrecision.set(.fp32) }
        MatmulPrecision.ablations = []
        let fp32 = MatmulPrecision.with(.fp32) { run() }!
        MatmulPrecision.set(.bf16)
        let bf = run()
        XCTAssertNotEqual(bf.gx, fp32.gx)
        XCTAssertNotEqual(bf.gw, fp32.gw)
        MatmulPrecision.ablations = ["backward-dinp-fp32"]
        let dinp = run()
        MatmulPrecision.ablations = ["backward-dweight-fp32"]
        let dweight = run()
        XCTAssertEqual(dinp.y, bf.y)
        XCTAssertEqual(dweight.y, bf.y)
        // dout = 2y is bf16's in all three, so each half equals the fp32 kernel on the same dout.
        let dout = bf.y.map { 2 * $0 }
        var gx = [Float](repeating: 0, count: 54), gw = [Float](repeating: 0, count: 36)
        linearBackward(dinp: &gx, dweight: &gw, dbias: nil, dout: dout, inp: x.scalars, weight: w.scalars, n: 6, inFeatures: 9, outFeatures: 4)
        XCTAssertEqual(dinp.gx, gx, "backward-dinp-fp32: the input gradient in fp32")
        XCTAssertEqual(dinp.gw, bf.gw, "backward-dinp-fp32: the weight gradient in bf16")
        XCTAssertEqual(dweight.gx, bf.gx, "backward-dweight-fp32: the input gradient in bf16")
        XCTAssertEqual(dweight.gw, gw, "backward-dweight-fp32: the weight gradient in fp32")
        // The learning policy's per-weight flag (`bf16_fp32_weight_grads`) is the same split,
        // for the flagged weight only.
        MatmulPrecision.ablations = []
        w.weightGradFP32 = true
        defer { w.weightGradFP32 = false }
        let flagged = run()
        XCTAssertEqual(flagged.y, bf.y)
        XCTAssertEqual(flagged.gx, bf.gx, "weightGradFP32: the input gradient in bf16")
        XCTAssertEqual(flagged.gw, gw, "weightGradFP32: the weight gradient in fp32")
    }

    /// fp32 stays the default, and switching bf16 on and off leaves fp32 results bit-identical
    /// to the fp32 kernels called directly.
    func testFP32IsTheDefaultAndUnchanged() throws {
        XCTAssertEqual(MatmulPrecision.current, .fp32)
        let x = randomTensor([5, 7], seed: 1), w = randomTensor([3, 7], seed: 2), b = randomTensor([3], seed: 3)
        let direct = Tensor(zeros: [5, 3])
        linearForward(out: direct.data, inp: x.data, weight: w.data, bias: b.data, n: 5, inFeatures: 7, outFeatures: 3)
        _ = MatmulPrecision.with(.bf16) { x.linear(w, b) }
        XCTAssertEqual(MatmulPrecision.current, .fp32)
        XCTAssertEqual(x.linear(w, b).scalars, direct.scalars)
    }

    /// On a CPU without bf16 the mode falls back to fp32 with a warning that says why.
    func testNoBF16CPUFallsBackWithAWarning() {
        MatmulPrecision.simulateNoBF16 = true
        let warning = MatmulPrecision.set(.bf16)
        XCTAssertEqual(MatmulPrecision.current, .fp32)
        XCTAssertNotNil(warning)
        XCTAssertTrue(warning?.contains("falling back to fp32") == true, warning ?? "")
        XCTAssertTrue(warning?.contains("avx512_bf16 no") == true, warning ?? "")
        XCTAssertNil(MatmulPrecision.with(.bf16) { 1 })
    }
}

private func onesTensor(_ n: Int) -> Tensor { let t = Tensor(zeros: [n]); for i in 0..<n { t.data[i] = 1 }; return t }
private func zerosTensor(_ n: Int) -> Tensor { Tensor(zeros: [n]) }
