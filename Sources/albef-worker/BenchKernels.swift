import ArgumentParser
import Foundation
import Tensor
import Training
import CKernels

/// `albef-worker bench-kernels`: our kernels at ALBEF shapes beside raw sgemm and a memory
/// bandwidth loop measured in the same run.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-kernels",
        abstract: "Kernel throughput at ALBEF shapes vs raw cblas_sgemm and measured memory bandwidth.")
    @Option(help: "Threads (BLAS and kernels).") var threads: Int = 2
    @Option(help: "Repetitions per measurement (median reported).") var reps: Int = 7
    @Option(help: "Rounds of (bandwidth loop, kernel forward, kernel backward) per bandwidth-bound kernel.") var rounds: Int = 15

    func median(_ body: () -> Void) -> Double { times(body)[reps / 2] }

    /// `reps` rounds of (raw, ours) after a warm-up of each: the median times and the median of
    /// the per-round ratios raw/ours (side by side, so a slow second of the machine hits both).
    func pairedRounds(raw: () -> Void, ours: () -> Void) -> (raw: Double, ours: Double, ratio: Double) {
        raw(); ours()
        var tr: [Double] = [], to: [Double] = [], ratios: [Double] = []
        for _ in 0..<reps {
            var a = monotonicSeconds(); raw(); tr.append(monotonicSeconds() - a)
            a = monotonicSeconds(); ours(); to.append(monotonicSeconds() - a)
            ratios.append(tr.last! / to.last!)
        }
        return (tr.sorted()[reps / 2], to.sorted()[reps / 2], ratios.sorted()[reps / 2])
    }

    /// Sorted times of `reps` runs after a warm-up run (first touch).
    func times(_ body: () -> Void) -> [Double] {
        body()
        var t: [Double] = []
        for _ in 0..<reps { let a = monotonicSeconds(); body(); t.append(monotonicSeconds() - a) }
        return t.sorted()
    }

    func buffer(_ n: Int, seed: UInt64) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
        var r = RandomGenerator(seed: seed)
        for i in 0..<n { p[i] = r.uniform(Float(-1), Float(1)) }
        return p
    }

    func run() throws {
        Threading.setThreads(threads)
        print("threads: \(threads)")
        // Memory bandwidth: y = a·x + y over 64 MiB arrays (read 2, write 1). This shared
        // machine's reading varies by 2× from one second to the next, so each bandwidth-bound
        // kernel below is timed side by side with this loop: every round runs the loop, then the
        // kernel's forward and backward, and the kernel's ratio is the median over rounds of
        // (kernel GB/s ÷ loop GB/s in the same round).
        let n = 16 << 20
        let x = buffer(n, seed: 1), y = buffer(n, seed: 2)
        func axpy() {
            Threading.parallelFor(n / 8, grain: 4096) { r in
                var i = r.lowerBound * 8
                let e = r.upperBound * 8
                while i < e {
                    let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) * 0.5
                        + UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(y + i).storeBytes(of: v, as: SIMD8<Float>.self)
                    i += 8
                }
            }
        }
        let bwBytes = Double(3 * n * 4)
        // An untimed read of another 64 MiB after the loop: it evicts the loop's dirty lines (their
        // write-back would otherwise be charged to the kernel that follows — tens of MB against a
        // layer norm that moves 75 MB) and leaves the cache cold but clean, as for any kernel.
        let clean = buffer(n, seed: 40)
        func evictClean() {
            Threading.parallelFor(n / 8, grain: 4096) { r in
                var acc = SIMD8<Float>()
                var i = r.lowerBound * 8
                while i < r.upperBound * 8 { acc += UnsafeRawPointer(clean + i).loadUnaligned(as: SIMD8<Float>.self); i += 8 }
                if acc.sum() == .infinity { print("") }  // keeps the loop
            }
        }
        let bw = bwBytes / times(axpy).first! / 1e9
        print(String(format: "%-34@ %8.2f GB/s", "memory bandwidth (axpy, 64 MiB, best)" as NSString, bw))

        /// Rounds of (bandwidth loop, forward, backward): the kernel's best GB/s, the loop's best,
        /// the forward and backward medians, and the median of the per-round ratios.
        func sideBySide(bytes: Double, forward: () -> Void, backward: () -> Void)
            -> (gbs: Double, bw: Double, fwd: Double, bwd: Double, ratio: Double) {
            axpy(); forward(); backward()  // warm-up (first touch)
            var tBW: [Double] = [], tF: [Double] = [], tB: [Double] = [], ratios: [Double] = []
            for _ in 0..<rounds {
                var a = monotonicSeconds(); axpy(); tBW.append(monotonicSeconds() - a)
                evictClean()
                a = monotonicSeconds(); forward(); tF.append(monotonicSeconds() - a)
                a = monotonicSeconds(); backward(); tB.append(monotonicSeconds() - a)
                ratios.append((bytes / (tF.last! + tB.last!)) / (bwBytes / tBW.last!))
            }
            let best = zip(tF, tB).map { $0 + $1 }.min()!
            return (bytes / best / 1e9, bwBytes / tBW.min()! / 1e9, tF.sorted()[rounds / 2], tB.sorted()[rounds / 2],
                    ratios.sorted()[rounds / 2])
        }

        var fwdRatios: [Double] = [], bwdRatios: [Double] = []
        // bf16 GEMMs where the CPU has them (oneDNN), timed beside sgemm.
        let bf16Available = MatmulPrecision.set(.bf16) == nil
        MatmulPrecision.set(.fp32)
        print("bf16: \(MatmulPrecision.cpu)\(bf16Available ? "" : " (bf16 lines skipped)")")
        var bf16Speedups: [Double] = []
        for (m, k, nOut) in [(4096, 768, 3072), (4096, 3072, 768)] {
            let a = buffer(m * k, seed: 3), w = buffer(nOut * k, seed: 4), b = buffer(nOut, seed: 5)
            let o = buffer(m * nOut, seed: 6), dout = buffer(m * nOut, seed: 7)
            let da = buffer(m * k, seed: 8), dw = buffer(nOut * k, seed: 9), db = buffer(nOut, seed: 10)
            let flops = 2.0 * Double(m * k * nOut)
            // Rounds of (raw, ours) side by side; the ratio is the median of the per-round ratios.
            let f = pairedRounds(
                raw: { sgemm(transB: true, m: m, n: nOut, k: k, a: a, lda: k, b: w, ldb: k, c: o, ldc: nOut) },
                ours: { linearForward(out: o, inp: a, weight: w, bias: b, n: m, inFeatures: k, outFeatures: nOut) })
            let bk = pairedRounds(
                raw: {
                    sgemm(m: m, n: k, k: nOut, a: dout, lda: nOut, b: w, ldb: k, beta: 1, c: da, ldc: k)
                    sgemm(transA: true, m: nOut, n: k, k: m, a: dout, lda: nOut, b: a, ldb: k, beta: 1, c: dw, ldc: k)
                },
                ours: { linearBackward(dinp: da, dweight: dw, dbias: db, dout: dout, inp: a, weight: w, n: m, inFeatures: k, outFeatures: nOut) })
            let (rawF, ourF, rawB, ourB) = (f.raw, f.ours, bk.raw, bk.ours)
            fwdRatios.append(f.ratio)
            bwdRatios.append(bk.ratio)
            print(String(format: "linear %dx%d→%d forward   ours %7.1f GFLOP/s  raw sgemm %7.1f GFLOP/s (medians)  median ratio %.3f", m, k, nOut, flops / ourF / 1e9, flops / rawF / 1e9, f.ratio))
            print(String(format: "linear %dx%d→%d backward  ours %7.1f GFLOP/s  raw sgemm %7.1f GFLOP/s (medians)  median ratio %.3f", m, k, nOut, 2 * flops / ourB / 1e9, 2 * flops / rawB / 1e9, bk.ratio))
            if bf16Available {
                // bf16 beside sgemm in the same rounds: raw oneDNN matmul on operands already in
                // bf16, and our bf16 linear (which also rounds the activations, and dout, per call).
                let ab = BF16Buffer(converting: a, count: m * k), wb = BF16Buffer(converting: w, count: nOut * k)
                let gb = BF16Buffer(converting: dout, count: m * nOut)
                let rf = pairedRounds(
                    raw: { sgemm(transB: true, m: m, n: nOut, k: k, a: a, lda: k, b: w, ldb: k, c: o, ldc: nOut) },
                    ours: { bf16gemm(transB: true, m: m, n: nOut, k: k, a: ab.pointer, lda: k, b: wb.pointer, ldb: k, c: o, ldc: nOut) })
                let lf = pairedRounds(
                    raw: { linearForward(out: o, inp: a, weight: w, bias: b, n: m, inFeatures: k, outFeatures: nOut) },
                    ours: { linearForwardBF16(out: o, inp: a, weight: wb.pointer, ldw: k, bias: b, n: m, inFeatures: k, outFeatures: nOut) })
                let lb = pairedRounds(
                    raw: { linearBackward(dinp: da, dweight: dw, dbias: db, dout: dout, inp: a, weight: w, n: m, inFeatures: k, outFeatures: nOut) },
                    ours: { linearBackwardBF16(dinp: da, dweight: dw, dbias: db, dout: dout, inp: a, weight: wb.pointer, ldw: k, n: m, inFeatures: k, outFeatures: nOut) })
                let impl = (try? OneDNN.implementation(transB: true, m: m, n: nOut, k: k, lda: k, ldb: k, ldc: nOut)) ?? "?"
                print(String(format: "bf16 gemm %dx%dx%d (%@)  %7.1f GFLOP/s  sgemm %7.1f GFLOP/s (medians)  median speed-up %.3f", m, nOut, k, impl as NSString,
                             flops / rf.ours / 1e9, flops / rf.raw / 1e9, rf.ratio))
                print(String(format: "bf16 linear %dx%d→%d forward   %7.1f GFLOP/s  fp32 linear %7.1f GFLOP/s  median speed-up %.3f", m, k, nOut,
                             flops / lf.ours / 1e9, flops / lf.raw / 1e9, lf.ratio))
                print(String(format: "bf16 linear %dx%d→%d backward  %7.1f GFLOP/s  fp32 linear %7.1f GFLOP/s  median speed-up %.3f", m, k, nOut,
                             2 * flops / lb.ours / 1e9, 2 * flops / lb.raw / 1e9, lb.ratio))
                bf16Speedups.append(rf.ratio)
                // The layout a training step reads its weights in: split in place (`BF16Weights`),
                // the bf16 high halves of each row followed by its low halves, so leading
                // dimension 2K; beside a dense bf16 copy (leading dimension K), for x·Wᵀ (forward)
                // and dout·W (input gradient). oneDNN may pick a different kernel for each
                // (2.6.3 here: gemm:jit for the split, brg for dense).
                let ws = BF16Buffer(unpooledCount: nOut * 2 * k)
                for r in 0..<nOut { (ws.pointer + r * 2 * k).update(from: wb.pointer + r * k, count: k) }
                for (what, transB, n, kk, a, lda, c, ldc) in [("x·Wᵀ", true, nOut, k, ab.pointer, k, o, nOut),
                                                              ("dout·W", false, k, nOut, gb.pointer, nOut, da, k)] {
                    func gemm(_ b: UnsafePointer<UInt16>, ldb: Int) {
                        bf16gemm(transB: transB, m: m, n: n, k: kk, a: a, lda: lda, b: b, ldb: ldb, beta: 1, c: c, ldc: ldc)
                    }
                    func kernel(ldb: Int) -> NSString {
                        ((try? OneDNN.implementation(transB: transB, m: m, n: n, k: kk, lda: lda, ldb: ldb, beta: 1, ldc: ldc)) ?? "?") as NSString
                    }
                    let r = pairedRounds(raw: { gemm(wb.pointer, ldb: k) }, ours: { gemm(ws.pointer, ldb: 2 * k) })
                    print(String(format: "bf16 gemm %dx%dx%d %@, W split in place (%@)  %7.1f GFLOP/s  dense copy (%@) %7.1f GFLOP/s (medians)  median split/dense speed %.3f",
                                 m, n, kk, what as NSString, kernel(ldb: 2 * k), flops / r.ours / 1e9, kernel(ldb: k), flops / r.raw / 1e9, r.ratio))
                }
                withExtendedLifetime((ab, wb, gb, ws)) {}
            }
            for p in [a, w, b, o, dout, da, dw, db] { p.deallocate() }
        }

        // Attention: 16 × 12 heads × 257 tokens × 64.
        do {
            let bsz = 16, h = 12, l = 257, d = 64, c = h * d
            let qkv = buffer(bsz * l * 3 * c, seed: 11), out = buffer(bsz * l * c, seed: 12), probs = buffer(bsz * h * l * l, seed: 13)
            let dqkv = buffer(bsz * l * 3 * c, seed: 14), dout = buffer(bsz * l * c, seed: 15)
            let flops = 4.0 * Double(bsz * h * l * l * d)
            let tf = median { attentionForward(out: out, probs: probs, q: qkv, ldq: 3 * c, k: qkv + c, ldk: 3 * c, v: qkv + 2 * c, ldv: 3 * c, mask: nil, batch: bsz, heads: h, lq: l, lk: l, headDim: d, scale: 0.125) }
            let tb = median { attentionBackward(dq: dqkv, dk: dqkv + c, dv: dqkv + 2 * c, dout: dout, probs: probs, q: qkv, ldq: 3 * c, k: qkv + c, ldk: 3 * c, v: qkv + 2 * c, ldv: 3 * c, batch: bsz, heads: h, lq: l, lk: l, headDim: d, scale: 0.125) }
            print(String(format: "attention 16x12x257x64 forward  %7.1f GFLOP/s (%.2f ms); backward %7.1f GFLOP/s (%.2f ms)", flops / tf / 1e9, tf * 1e3, 2 * flops / tb / 1e9, tb * 1e3))
            if bf16Available {
                let tf16 = median { attentionForwardBF16(out: out, probs: probs, q: qkv, ldq: 3 * c, k: qkv + c, ldk: 3 * c, v: qkv + 2 * c, ldv: 3 * c, mask: nil, batch: bsz, heads: h, lq: l, lk: l, headDim: d, scale: 0.125) }
                let tb16 = median { attentionBackwardBF16(dq: dqkv, dk: dqkv + c, dv: dqkv + 2 * c, dout: dout, probs: probs, q: qkv, ldq: 3 * c, k: qkv + c, ldk: 3 * c, v: qkv + 2 * c, ldv: 3 * c, batch: bsz, heads: h, lq: l, lk: l, headDim: d, scale: 0.125) }
                print(String(format: "attention 16x12x257x64 bf16 forward  %7.1f GFLOP/s (%.2f ms); backward %7.1f GFLOP/s (%.2f ms)", flops / tf16 / 1e9, tf16 * 1e3, 2 * flops / tb16 / 1e9, tb16 * 1e3))
            }
        }

        // Bytes counted: forward reads x and writes y (2 arrays), backward reads x (or y), dy and dx
        // and writes dx (4 arrays).
        func report(_ name: String, _ r: (gbs: Double, bw: Double, fwd: Double, bwd: Double, ratio: Double)) {
            print(String(format: "%@ fwd %.3f ms bwd %.3f ms: %7.2f GB/s (best; loop best %.2f GB/s); median ratio to the loop %.3f",
                         name as NSString, r.fwd * 1e3, r.bwd * 1e3, r.gbs, r.bw, r.ratio))
        }

        // Layer norm over 4096 × 768.
        let rows = 4096, cols = 768
        let lx = buffer(rows * cols, seed: 16), ly = buffer(rows * cols, seed: 17), ldy = buffer(rows * cols, seed: 18), ldx = buffer(rows * cols, seed: 19)
        let lw = buffer(cols, seed: 20), lb = buffer(cols, seed: 21), mean = buffer(rows, seed: 22), rstd = buffer(rows, seed: 23)
        let dw = buffer(cols, seed: 24), dbb = buffer(cols, seed: 25)
        let ln = sideBySide(bytes: Double(rows * cols * 4) * (2 + 4),
            forward: { layerNormForward(out: ly, mean: mean, rstd: rstd, inp: lx, weight: lw, bias: lb, rows: rows, cols: cols, eps: 1e-6) },
            backward: { layerNormBackward(dinp: ldx, dweight: dw, dbias: dbb, dout: ldy, inp: lx, weight: lw, mean: mean, rstd: rstd, rows: rows, cols: cols) })
        report("layernorm 4096x768", ln)

        // Softmax over attention rows: 16·12·257 rows × 257.
        let sr = 16 * 12 * 257, sc = 257
        let sx = buffer(sr * sc, seed: 26), sy = buffer(sr * sc, seed: 27), sdy = buffer(sr * sc, seed: 28), sdx = buffer(sr * sc, seed: 29)
        let sm = sideBySide(bytes: Double(sr * sc * 4) * (2 + 4),
            forward: { softmaxForward(out: sy, inp: sx, rows: sr, cols: sc) },
            backward: { softmaxBackward(dinp: sdx, dout: sdy, out: sy, rows: sr, cols: sc) })
        report("softmax 49344x257", sm)

        // GELU over 4096 × 3072.
        let gn = 4096 * 3072
        let gx = buffer(gn, seed: 30), gy = buffer(gn, seed: 31), gdy = buffer(gn, seed: 32), gdx = buffer(gn, seed: 33)
        let ge = sideBySide(bytes: Double(gn * 4) * (2 + 4),
            forward: { geluForward(out: gy, inp: gx, count: gn) },
            backward: { geluBackward(dinp: gdx, dout: gdy, inp: gx, count: gn) })
        report("gelu 4096x3072", ge)
        // fp32 → bf16 rounding over 4096 × 3072 (reads 4 B, writes 2 B per element); "backward"
        // is the same conversion again (it has none), so the line reads like the others.
        let cb = BF16Buffer(count: gn)
        let cv = sideBySide(bytes: Double(gn) * 6 * 2,
            forward: { convertToBF16(cb.pointer, gx, count: gn) },
            backward: { convertToBF16(cb.pointer, gy, count: gn) })
        report("fp32→bf16 4096x3072 (×2)", cv)
        print("code path: \(["portable", "?", "avx2+fma", "avx-512"][Int(ck_simd_level())])")

        print(String(format: "kernels: linear_fwd_vs_sgemm=%.3f linear_bwd_vs_sgemm=%.3f layernorm_vs_bw=%.3f softmax_vs_bw=%.3f gelu_vs_bw=%.3f",
                     fwdRatios.min()!, bwdRatios.min()!, ln.ratio, sm.ratio, ge.ratio))
        if !bf16Speedups.isEmpty {
            print(String(format: "kernels: bf16_gemm_vs_sgemm=%.3f", bf16Speedups.min()!))
        }
    }
}
