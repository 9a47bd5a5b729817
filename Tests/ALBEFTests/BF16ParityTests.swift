import Foundation
import XCTest
@testable import ALBEF
@testable import ALBEFSelfCheck
@testable import NN
@testable import Tensor

/// Parity of one ALBEF step in bf16 mixed precision with the fp32 PyTorch fixtures (the ones
/// `PretrainStepSelfCheck` checks at fp32 tolerances), at tolerances derived for bf16.
///
/// Derivation. bf16 keeps 8 significant bits: rounding to nearest moves a value by at most
/// u = 2⁻⁸ relative, uniformly distributed, so by ≈ u/√3·0.7 ≈ 1.6e-3 rms (0.7: the mean of the
/// relative error over the significand's range). A GEMM rounds both operands: its output is off
/// by ≈ √2·1.6e-3 ≈ 2.3e-3 relative L2 (independent products; accumulation is fp32). Each
/// sublayer adds its own such error to the fp32 residual stream, and layer norm keeps the
/// stream's scale, so errors add in quadrature over the sublayers on the deepest path rather than
/// compounding: the tiny fixture has ≈ 32 GEMM stages (ViT 4 blocks × 4, BERT 4 layers × 4–6,
/// heads), √32·2.3e-3 ≈ 0.013 relative L2 for activations; tolerance 0.02. Gradients pass the
/// backward's as many stages again: √2·0.013 ≈ 0.018, tolerance 0.04 for a whole tensor and for
/// its norm (a norm's relative error is at most its tensor's). Losses: a cross-entropy moves by
/// about the error of its logits (ITC logits are O(10): cosines / temp 0.07): ≈ 0.013·O(1) on
/// average over the batch, tolerance 0.01 + 0.002·|loss|. Parameters after AdamW's first step
/// move by lr·g/(|g| + eps) ≈ ±lr, so an element whose gradient sign flips under bf16 may differ
/// by up to 2·lr. Momentum weights after the step are the EMA of the fp32 weights (no GEMM):
/// the fp32 tolerance. The queues hold momentum features (bf16 GEMMs): the activation tolerance.
/// Measured (printed by the tests): activations ≤ 0.0072, gradients ≤ 0.0052, losses ≤ 9e-4.
final class BF16ParityTests: XCTestCase {
    override func setUp() { Threading.setThreads(1) }
    override func tearDown() { MatmulPrecision.set(.fp32) }

    struct Errors {
        var lines: [String] = []
        var failures: [String] = []
        var worst: [String: (Double, String)] = [:]

        mutating func check(_ group: String, _ name: String, _ err: Double, _ tol: Double) {
            if err > (worst[group]?.0 ?? -1) { worst[group] = (err, name) }
            if !(err <= tol) { failures.append(String(format: "%@ %@: %.3g > tolerance %.3g", group, name, err, tol)) }
        }
    }

    static func relL2(_ a: [Float], _ b: [Float]) -> Double {
        var d = 0.0, n = 0.0
        for i in 0..<min(a.count, b.count) { let x = Double(a[i]) - Double(b[i]); d += x * x; n += Double(b[i]) * Double(b[i]) }
        return a.count == b.count ? (d.squareRoot() / max(n.squareRoot(), 1e-12)) : .infinity
    }

    /// Runs the fixture's step in bf16 and returns the measured errors.
    func runFixture(_ dir: URL) throws -> Errors {
        let json = try readFixtureJSON(dir)
        let file = try SafeTensorsFile(path: dir.appendingPathComponent("fixture.safetensors").path)
        var (config, _, _, alpha) = try PretrainStepSelfCheck.modelConfig(json)
        let imgShape = file.entries["batch/image"]!.shape, idsShape = file.entries["batch/input_ids"]!.shape
        config.imageRes = imgShape[2]
        if let q = file.entries["image_queue"]?.shape { config.embedDim = q[0]; config.queueSize = q[1] }
        if let pe = file.entries["visual_encoder.patch_embed.proj.weight"]?.shape { config.visionWidth = pe[0]; config.patchSize = pe[2] }
        config.vitDepth = Set(file.entries.keys.compactMap { k -> Int? in
            guard k.hasPrefix("visual_encoder.blocks.") else { return nil }
            return Int(k.dropFirst("visual_encoder.blocks.".count).prefix { $0.isNumber })
        }).count
        if let fc1 = file.entries["visual_encoder.blocks.0.mlp.fc1.weight"]?.shape { config.vitMlpRatio = Float(fc1[0]) / Float(config.visionWidth) }
        let b = idsShape[0], l = idsShape[1]

        XCTAssertNil(MatmulPrecision.set(.bf16))
        let model = ALBEFPretrain(config, seed: 1234)
        model.pack()
        _ = try model.load(from: file, strict: false)
        BF16Weights.invalidate()  // weights loaded after packing
        let opt = (json["config"] as? [String: Any])?["optimizer"] as? [String: Any] ?? [:]
        let lr = num(opt["lr"]) ?? 1e-4
        let adam = AdamW(model.online!, lr: Float(lr), weightDecay: Float(num(opt["weight_decay"]) ?? 0.02))
        let batch = PretrainBatch(images: try file.tensor("batch/image"), inputIds: try file.ints("batch/input_ids").int32,
                                  attentionMask: try file.ints("batch/attention_mask").int32, batchSize: b, length: l)
        let inj = StepInjection(negativeImageIndex: try file.ints("batch/itm_neg_image_idx").values.map { Int($0) },
                                negativeTextIndex: try file.ints("batch/itm_neg_text_idx").values.map { Int($0) },
                                mlmInputIds: try file.ints("batch/mlm_input_ids").int32, mlmLabels: try file.ints("batch/mlm_labels").int32)
        var rng = RandomGenerator(seed: 0)
        model.online!.zeroGradients()
        let out = model.forwardStep(batch, alpha: alpha, rng: &rng, injection: inj, keepActivations: true)
        out.total.backward()
        model.commitEnqueue()

        var e = Errors()
        let scalars = json["scalars"] as? [String: Any] ?? [:]
        for (k, v) in [("loss_ita", out.lossITA.item), ("loss_itm", out.lossITM.item), ("loss_mlm", out.lossMLM.item), ("loss_total", out.total.item)] {
            guard let ref = num(scalars[k]) else { continue }
            let err = abs(Double(v) - ref)
            e.lines.append(String(format: "  %@: bf16 %.6f  fp32 reference %.6f  |Δ| %.2e", k, Double(v), ref, err))
            e.check("loss", k, err, 0.01 + 0.002 * abs(ref))
        }
        for key in file.keys where key.hasPrefix("expected/") && !key.hasPrefix("expected/grad/") && !key.hasPrefix("expected/after") {
            let name = String(key.dropFirst("expected/".count))
            guard let t = out.activations[name] else { e.failures.append("no activation \(name)"); continue }
            e.check("activation", name, Self.relL2(t.scalars, try file.floats(key)), 0.02)
        }
        let params = Dictionary(model.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        for key in file.keys where key.hasPrefix("expected/grad/") {
            let name = String(key.dropFirst("expected/grad/".count))
            guard let g = params[name]?.grad else { e.failures.append("no gradient \(name)"); continue }
            e.check("gradient", name, Self.relL2(g.scalars, try file.floats(key)), 0.04)
        }
        for (name, v) in json["grad_norms_all"] as? [String: Any] ?? [:] {
            guard let ref = num(v), ref > 1e-6 else { continue }
            guard let g = params[name]?.grad else { e.failures.append("no gradient \(name)"); continue }
            e.check("grad-norm", name, abs(l2Norm(g) - ref) / ref, 0.04)
        }
        if let ref = num(scalars["global_grad_norm"]) {
            e.check("global-grad-norm", "", abs(model.online!.gradientNormSquared().squareRoot() - ref) / ref, 0.04)
        }
        for key in file.keys where key.hasPrefix("expected/after/") {
            let name = String(key.dropFirst("expected/after/".count))
            if name == "queue_ptr" { continue }
            if name == "image_queue" || name == "text_queue" {
                // Compared on the enqueued columns only (the elements the step changed).
                let before = try file.floats(name), ref = try file.floats(key)
                let got = (name == "image_queue" ? model.imageQueue : model.textQueue).scalars
                let changed = ref.indices.filter { ref[$0] != before[$0] }
                e.check("queue-after", "\(name) (\(changed.count) changed)", Self.relL2(changed.map { got[$0] }, changed.map { ref[$0] }), 0.02)
            } else if let p = params[name] {
                let ref = try file.floats(key), got = p.scalars
                let worst = zip(got, ref).map { Double(abs($0 - $1)) / (1e-6 + 1e-5 * Double(abs($1))) }.max() ?? 0
                e.check("momentum-after (fp32 atol 1e-6, rtol 1e-5)", name, worst, 1)
            }
        }
        adam.update()
        for key in file.keys where key.hasPrefix("expected/after_adamw/") {
            let name = String(key.dropFirst("expected/after_adamw/".count))
            guard let p = params[name] else { continue }
            let worst = zip(p.scalars, try file.floats(key)).map { Double(abs($0 - $1)) }.max() ?? 0
            e.check("after-adamw |Δ| (≤ 2·lr)", name, worst, 2 * lr + 1e-6)
        }
        MatmulPrecision.set(.fp32)
        return e
    }

    func report(_ dir: URL, _ e: Errors) {
        print("bf16 parity on \(dir.lastPathComponent):")
        e.lines.forEach { print($0) }
        for (group, w) in e.worst.sorted(by: { $0.key < $1.key }) { print(String(format: "  worst %@: %.3g (%@)", group, w.0, w.1)) }
        for f in e.failures { XCTFail("\(dir.lastPathComponent): \(f)") }
    }

    func requireBF16() throws {
        guard MatmulPrecision.set(.bf16) == nil else { throw XCTSkip("no bf16 GEMM backend on this CPU: \(MatmulPrecision.cpu)") }
        MatmulPrecision.set(.fp32)
    }

    func testMicroFixtureInBF16() throws {
        try requireBF16()
        let e = try runFixture(microFixture)
        report(microFixture, e)
        // bf16 must actually have run: its errors are far above fp32's 1e-5-level agreement.
        XCTAssertGreaterThan(e.worst["activation"]?.0 ?? 0, 1e-4, "bf16 activations agree to fp32 precision: was the bf16 path taken?")
    }

    func testTinyFixtureInBF16() throws {
        try requireBF16()
        guard FileManager.default.fileExists(atPath: tinyFixture.appendingPathComponent("fixture.json").path) else {
            throw XCTSkip("\(tinyFixture.path) is absent (the tiny fixture lives in ../shared/fixtures)")
        }
        let e = try runFixture(tinyFixture)
        report(tinyFixture, e)
        XCTAssertGreaterThan(e.worst["activation"]?.0 ?? 0, 1e-4)
    }

    /// The existing fp32 selfcheck still passes after a bf16 run in the same process (the mode
    /// is fully switched back; nothing cached leaks into fp32).
    func testFP32SelfCheckAfterBF16() throws {
        try requireBF16()
        _ = try runFixture(microFixture)
        let report = SelfCheckReport(echo: false)
        try PretrainStepSelfCheck.run(directory: microFixture, report: report)
        for f in report.failures { XCTFail(f.line) }
        XCTAssertTrue(report.passed, report.verdict)
    }
}
