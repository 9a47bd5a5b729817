import CKernels
import ALBEF
import ArgumentParser
import Distributed
import Foundation
import Tensor
import Training

/// `albef-worker bench-step`: times full ALBEF training steps on synthetic batches.
struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-step",
        abstract: "Time ALBEF training steps (forward / backward / optimizer, peak RSS, matmul GFLOP/s).")

    @Option(help: "ALBEF YAML config.") var config: String
    @Option(help: "Name printed in the result line.") var name: String?
    @Option(help: "Per-rank batch size (default: the config's).") var batchSize: Int?
    @Option(help: "Text length (default: the config's max_length).") var textLength: Int?
    @Option(help: "Measured steps.") var steps: Int = 5
    @Option(help: "Warm-up steps.") var warmup: Int = 2
    @Option(help: "Threads for BLAS and kernels.") var threads: Int = 2

    @Option(help: "GEMM precision: fp32, bf16, or both (each round runs one fp32 and one bf16 step on the same trainer, side by side; ratios are medians of the per-round ratios).")
    var precision: String = "fp32"

    @Option(help: "bf16 weight gradients: config (the config's bf16_fp32_weight_grads), bf16 (every GEMM in bf16, autocast's policy), or both (each round runs a bf16 step with each, side by side).")
    var weightGrads: String = "config"

    /// One measured configuration: a precision and, in bf16, the weight-gradient policy.
    struct Variant: Hashable {
        var precision: Precision
        /// bf16 weight gradients of every module (`bf16_fp32_weight_grads: []`).
        var allBF16WeightGrads = false
        var label: String { precision == .fp32 ? "fp32" : allBF16WeightGrads ? "bf16 weight_grads=bf16" : "bf16" }
    }

    func run() throws {
        Threading.setThreads(threads)
        let precisions: [Precision]
        switch precision.lowercased() {
        case "both": precisions = [.fp32, .bf16]
        default:
            guard let p = Precision(rawValue: precision.lowercased()) else { throw ValidationError("--precision must be fp32, bf16 or both, got '\(precision)'") }
            precisions = [p]
        }
        for p in precisions where p == .bf16 {
            if let warning = MatmulPrecision.set(.bf16) { throw ValidationError("--precision bf16: \(warning)") }
            print("bf16 backend: \(MatmulPrecision.cpu)")
        }
        guard ["config", "bf16", "both"].contains(weightGrads) else { throw ValidationError("--weight-grads must be config, bf16 or both, got '\(weightGrads)'") }
        var variants: [Variant] = []
        for p in precisions {
            if p == .fp32 { variants.append(Variant(precision: .fp32)); continue }
            if weightGrads != "bf16" { variants.append(Variant(precision: .bf16)) }
            if weightGrads != "config" { variants.append(Variant(precision: .bf16, allBF16WeightGrads: true)) }
        }
        MatmulPrecision.set(precisions[0])
        var cfg = try TrainConfig.load(config)
        if let b = batchSize { cfg.batchSize = b }
        let l = textLength ?? cfg.maxLength
        // Keep the queue divisible by the batch.
        if cfg.model.queueSize % cfg.batchSize != 0 { cfg.model.queueSize = (cfg.model.queueSize / cfg.batchSize + 1) * cfg.batchSize }
        let comm = LocalWorld(size: 1).communicators()[0]
        let trainer = try Trainer(config: cfg, comm: comm, seed: 1)
        var autocastPolicy = cfg
        autocastPolicy.bf16FP32WeightGrads = []
        if variants.contains(where: { $0.precision == .bf16 && !$0.allBF16WeightGrads }) {
            print("bf16 weight gradients in fp32 for: " + (cfg.bf16FP32WeightGrads.isEmpty ? "none" : cfg.bf16FP32WeightGrads.joined(separator: ", ")))
        }
        let data = SyntheticBatches(batchSize: cfg.batchSize, length: l, imageRes: cfg.model.imageRes, vocabSize: cfg.model.bert.vocabSize, seed: 2)
        let batches = (0..<2).map { data.batch(rank: 0, step: $0) }
        print(String(format: "after init: rss %.0f MiB, peak %.0f MiB", residentMiB(), peakResidentMiB()))
        var times: [Variant: [Double]] = [:], fwd: [Variant: [Double]] = [:], bwd: [Variant: [Double]] = [:], opt: [Variant: [Double]] = [:]
        var flops: [Variant: Int] = [:]
        var ratios: [Double] = [], policyRatios: [Double] = []
        for s in 0..<(warmup + steps) {
            if s == warmup {
                FlopCounter.enabled = true
                FlopCounter.byShape = ProcessInfo.processInfo.environment["ALBEF_GEMM_SHAPES"] != nil
                _ = FlopCounter.take()
            }
            var round: [Variant: Double] = [:]
            for p in variants {
                MatmulPrecision.set(p.precision)
                if weightGrads == "both" || p.allBF16WeightGrads { try (p.allBF16WeightGrads ? autocastPolicy : cfg).applyBF16WeightGradPolicy(to: trainer.model) }
                let m = try trainer.step(batches[s % 2], epoch: 1, iteration: s, iterationsPerEpoch: 1000)
                if s >= warmup {
                    times[p, default: []].append(m.stepSeconds); fwd[p, default: []].append(m.forwardSeconds)
                    bwd[p, default: []].append(m.backwardSeconds); opt[p, default: []].append(m.optimizerSeconds)
                    flops[p, default: 0] += FlopCounter.take()
                    round[p] = m.stepSeconds
                }
                let tag = variants.count > 1 ? " [\(p.label)]" : ""
                print(String(format: "step %d%@: %.3f s (forward %.3f, backward %.3f, optimizer %.3f) loss %.4f rss %.0f MiB peak %.0f MiB; pool: peak live %.0f MiB, from system %.0f MiB",
                             s, tag, m.stepSeconds, m.forwardSeconds, m.backwardSeconds, m.optimizerSeconds, m.loss, residentMiB(), peakResidentMiB(),
                             Double(BufferPool.shared.peakLiveBytes) / 1048576, Double(BufferPool.shared.systemBytes) / 1048576))
            }
            if let a = round[Variant(precision: .fp32)], let b = round[Variant(precision: .bf16)] ?? round[Variant(precision: .bf16, allBF16WeightGrads: true)] { ratios.append(b / a) }
            if let a = round[Variant(precision: .bf16, allBF16WeightGrads: true)], let b = round[Variant(precision: .bf16)] { policyRatios.append(b / a) }
        }
        if FlopCounter.byShape {
            for (k, v) in FlopCounter.shapes.sorted(by: { $0.value.flops > $1.value.flops }).prefix(25) {
                print(String(format: "  gemm %@: %d calls, %.2f GFLOP/step", k, v.calls / (steps * variants.count), Double(v.flops) / Double(steps * variants.count) / 1e9))
            }
        }
        if getenv("ALBEF_POOL_TRACE") != nil {
            for (cap, n) in BufferPool.shared.liveByCapacityAtPeak.sorted(by: { $0.key * $0.value > $1.key * $1.value }) where n > 0 {
                print(String(format: "  pool at peak: %d × %d floats = %.1f MiB", n, cap, Double(n * cap * 4) / 1048576))
            }
        }
        let rssMiB = peakResidentMiB()
        func med(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
        let label = name ?? URL(fileURLWithPath: config).deletingPathExtension().lastPathComponent
        print(String(format: "params: %d trainable; batch %d, text length %d, image %d, threads %d", trainer.model.online!.count, cfg.batchSize, l,
                     cfg.model.imageRes, threads))
        print("memory now: " + memoryBreakdown())
        if precisions.contains(.bf16) {
            let bf16Steps = Double(max(1, (steps + warmup) * variants.filter { $0.precision == .bf16 }.count))
            print(String(format: "bf16 weights: split in place %d times (%.3f s a step), joined %d (%.3f s a step; %d split now); copies cached: %.0f MiB, conversions %d, hits %d; oneDNN primitives %d, scratchpad %.0f MiB",
                         BF16Weights.splitCount, BF16Weights.splitSeconds / bf16Steps, BF16Weights.joinCount,
                         BF16Weights.joinSeconds / bf16Steps, BF16Weights.splitNow,
                         Double(BF16Weights.cachedBytes) / 1048576,
                         BF16Weights.counters.conversions, BF16Weights.counters.hits, OneDNN.primitiveCount,
                         Double(OneDNN.threadScratchpadBytes) / 1048576))
            let r = ReleasedActivations.take()
            print(String(format: "bf16 inputs saved for the backward converted in place (attention Q/K/V, addingLinear): %d tensors a step, %.1f MiB of bf16 kept, %.1f MiB of their buffers' pages returned to the system",
                         r.tensors / Int(bf16Steps), Double(r.keptBF16) / bf16Steps / 1048576, Double(r.returned) / bf16Steps / 1048576))
        }
        for p in variants {
            let t = times[p]!, sorted = t.sorted()
            let suffix = variants.count > 1 || p.precision != .fp32 ? " precision=\(p.label)" : ""
            print(String(format: "split%@ (median): forward %.3f s, backward %.3f s, optimizer+EMA %.3f s", suffix, med(fwd[p]!), med(bwd[p]!), med(opt[p]!)))
            print(String(format: "step: config=%@%@ median_s=%.3f min_s=%.3f max_s=%.3f peak_rss_mib=%.0f gflops=%.1f", label, suffix, med(t), sorted.first!,
                         sorted.last!, rssMiB, Double(flops[p] ?? 0) / t.reduce(0, +) / 1e9))
        }
        if !ratios.isEmpty {
            print(String(format: "step: config=%@ bf16_vs_fp32 median_ratio=%.3f (per-round ratios %@)", label, med(ratios),
                         ratios.map { String(format: "%.3f", $0) }.joined(separator: " ")))
        }
        if !policyRatios.isEmpty {
            print(String(format: "step: config=%@ bf16 weight_grads config_vs_bf16 median_ratio=%.3f (per-round ratios %@)", label, med(policyRatios),
                         policyRatios.map { String(format: "%.3f", $0) }.joined(separator: " ")))
        }
        MatmulPrecision.set(.fp32)
    }
}

/// Resident set size now (from /proc/self/statm), MiB.
func residentMiB() -> Double {
    guard let s = procFile("/proc/self/statm"),
          let pages = s.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
    return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1048576
}

/// Peak resident set size of this process (getrusage ru_maxrss), MiB.
func peakResidentMiB() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_maxrss) / 1024
}

/// A /proc file read to its end (`String(contentsOfFile:)` trusts the size stat reports, 0 there,
/// and returns only the first chunk of a long one such as smaps).
func procFile(_ path: String) -> String? {
    guard let h = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? h.close() }
    return String(decoding: h.readDataToEndOfFile(), as: UTF8.self)
}

/// Resident memory now by kind (/proc/self/smaps_rollup, /proc/self/smaps): anonymous (heap,
/// pool, JIT code), file-backed (code of the binary and its libraries), and the libraries that
/// hold most of the latter.
func memoryBreakdown() -> String {
    func kb(_ text: String, _ key: String) -> Double {
        text.split(separator: "\n").first { $0.hasPrefix(key + ":") }.flatMap { Double($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
    }
    guard let roll = procFile("/proc/self/smaps_rollup") else { return "unavailable" }
    let rss = kb(roll, "Rss"), anon = kb(roll, "Anonymous")
    var byFile: [String: Double] = [:]
    var anonExec = 0.0
    if let smaps = procFile("/proc/self/smaps") {
        var current = "", exec = false
        for line in smaps.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = f.first, first.contains("-"), f.count >= 5, f[1].count == 4 {
                current = f.count >= 6 ? String(f[5]) : ""
                exec = f[1].contains("x")
            } else if line.hasPrefix("Rss:"), f.count >= 2, let v = Double(f[1]) {
                if current.hasPrefix("/") { byFile[URL(fileURLWithPath: current).lastPathComponent, default: 0] += v }
                else if exec { anonExec += v }
            }
        }
    }
    let top = byFile.sorted { $0.value > $1.value }.prefix(4).map { String(format: "%@ %.0f", $0.key, $0.value / 1024) }.joined(separator: ", ")
    var inUse = 0, mmapped = 0, freeInHeap = 0
    ck_malloc_stats(&inUse, &mmapped, &freeInHeap)
    return String(format: "rss %.0f MiB: anonymous %.0f MiB, file-backed %.0f MiB (%@); anonymous executable (JIT code) %.0f MiB; malloc: in use %.0f MiB (of it mmapped %.0f MiB), free in its heap %.0f MiB; pool: live %.0f MiB, idle %.0f MiB; bf16 scratch %.0f MiB",
                  rss / 1024, anon / 1024, (rss - anon) / 1024, top, anonExec / 1024, Double(inUse + mmapped) / 1048576, Double(mmapped) / 1048576,
                  Double(freeInHeap) / 1048576, Double(BufferPool.shared.liveBytes) / 1048576,
                  Double(BufferPool.shared.systemBytes - BufferPool.shared.liveBytes) / 1048576, Double(bf16ScratchBytes) / 1048576)
}
