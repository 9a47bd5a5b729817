import Foundation
import XCTest
@testable import NN

/// `finetune-retrieval` and `eval-retrieval` as a user runs them, under real `mpirun -n 2`, on a
/// small synthetic corpus (`albef-data synth` writes `re_train.json` and `heldout.json`).
final class RetrievalCLITests: XCTestCase {
    /// A 48-pair corpus (12 held-out images) and the micro config with Retrieval.yaml's keys.
    func makeSetup(_ dir: URL, extra: String = "") throws -> URL {
        let data = dir.appendingPathComponent("data")
        let (s, o) = try runCommand(productsDirectory().appendingPathComponent("albef-data").path,
                                    ["synth", "--out", data.path, "--samples", "48", "--heldout", "12", "--image-size", "32", "--shard-size", "48",
                                     "--threads", "1"])
        XCTAssertEqual(s, 0, o)
        return try writeMicroConfig(in: dir, schedular: "{sched: constant, epochs: 2}", extra: """
        train_file: '\(data.path)/re_train.json'
        test_file: '\(data.path)/heldout.json'
        image_root: '\(data.path)'
        batch_size_train: 4
        batch_size_test: 5
        k_test: 4
        \(extra)
        """)
    }

    /// Fine-tuning under `mpirun -n 2` to the end of its 2 epochs: 48 pairs / (2 × 4) = 6 steps an
    /// epoch; a checkpoint at each epoch end whose state dict has `idx_queue` holding the image ids
    /// of the last steps; `eval_every: 1` evaluates (rank-sliced) after each epoch into
    /// `eval.jsonl`, the best epoch's weights in `checkpoint_best/`; TensorBoard events; `--resume`
    /// of the finished run trains nothing. Then
    /// `eval-retrieval` of the final checkpoint gives the same recalls under `mpirun -n 2` as in
    /// one process, and the same as the epoch-end evaluation.
    func testFinetuneUnderMPIRunToTheEndThenEvalOneAndTwoRanksAgree() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rcli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try makeSetup(dir, extra: "eval_every: 1")
        let exe = productsDirectory().appendingPathComponent("albef-worker").path
        let out = dir.appendingPathComponent("run").path
        let args = ["--allow-run-as-root", "--oversubscribe", "-n", "2", exe, "finetune-retrieval", "--config", cfg.path, "--output-dir", out,
                    "--log-every", "1", "--divergence-check-every", "1"]
        let (s1, o1) = try runCommand("/usr/bin/mpirun", args, env: mpiEnvironment)
        XCTAssertEqual(s1, 0, o1)
        XCTAssertTrue(o1.contains("2 rank(s) × 4 micro-step") || o1.contains("global batch 8"), o1)
        XCTAssertTrue(o1.contains("6 iterations/epoch"), o1)
        XCTAssertTrue(o1.contains("epoch 1 step 12 | loss_ita"), o1)
        XCTAssertTrue(o1.contains("loss_mlm 0.0000"), o1)
        XCTAssertTrue(o1.contains("finished: 2 epoch(s) at step 12"), o1)
        let latest = try String(contentsOfFile: out + "/checkpoints/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(latest, "step_00000012")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/checkpoints/step_00000006/model.safetensors"), "epoch 0's checkpoint")
        let model = try SafeTensorsFile(path: out + "/checkpoints/step_00000012/model.safetensors")
        let ids = try model.ints("idx_queue")
        XCTAssertEqual(ids.shape, [1, 64])
        // 12 steps × 8 ids wrap the 64-column queue: every column written, ids of the 48 images.
        XCTAssertTrue(ids.values.allSatisfy { (0..<48).contains($0) }, "\(ids.values)")
        XCTAssertNil(model.entries["text_encoder.cls.predictions.bias"], "no MLM head in the retrieval state dict")
        let evalLines = try String(contentsOfFile: out + "/eval.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(evalLines.count, 2, "one evaluation per epoch end")
        let last = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(evalLines[1].utf8)) as? [String: Any])
        XCTAssertEqual(last["step"] as? Int, 12)
        let logged = try XCTUnwrap(last["test/r_mean"] as? Double)
        XCTAssertTrue(o1.contains("eval after epoch 1 (step 12): test/txt_r1"), o1)
        // checkpoint_best: the epoch with the best r_mean of the selection split (here the only one, test).
        let bestData = try XCTUnwrap(FileManager.default.contents(atPath: out + "/checkpoint_best/best.json"), o1)
        let best = try XCTUnwrap(JSONSerialization.jsonObject(with: bestData) as? [String: Any])
        XCTAssertEqual(best["metric"] as? String, "test/r_mean")
        let values = try evalLines.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])["test/r_mean"] as? Double }
        XCTAssertEqual(best["value"] as? Double, values.compactMap { $0 }.max())
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/checkpoint_best/model.safetensors"))
        let tb = try FileManager.default.contentsOfDirectory(atPath: out + "/tensorboard")
        XCTAssertFalse(tb.isEmpty, "TensorBoard events")

        let (s2, o2) = try runCommand("/usr/bin/mpirun", args + ["--resume"], env: mpiEnvironment)
        XCTAssertEqual(s2, 0, o2)
        XCTAssertTrue(o2.contains("already finished: 2 of 2 epochs done at step 12"), o2)

        // eval-retrieval: one process and two ranks print the same itm_eval dict.
        let evalArgs = [exe, "eval-retrieval", "--config", cfg.path, "--checkpoint", out + "/checkpoints/step_00000012"]
        let (s3, o3) = try runCommand(exe, Array(evalArgs.dropFirst()), env: mpiEnvironment)
        XCTAssertEqual(s3, 0, o3)
        let (s4, o4) = try runCommand("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2"] + evalArgs, env: mpiEnvironment)
        XCTAssertEqual(s4, 0, o4)
        func dict(_ text: String) -> String? { text.split(separator: "\n").first { $0.hasPrefix("{\"img_r1\"") }.map(String.init) }
        let one = try XCTUnwrap(dict(o3), o3), two = try XCTUnwrap(dict(o4), o4)
        XCTAssertEqual(one, two, "recalls of 1 and 2 ranks")
        XCTAssertTrue(o4.contains("12 images, 12 captions, ITM re-rank of top 4, 2 rank(s)"), o4)
        let r = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(one.utf8)) as? [String: Double])
        XCTAssertEqual(try XCTUnwrap(r["r_mean"]), logged, accuracy: 1e-9, "the epoch-end evaluation is eval-retrieval's")
    }

    /// SIGUSR1 to `mpirun` during fine-tuning: as `train`, the ranks checkpoint at the next step
    /// boundary and exit 75; `--resume` continues from that step.
    func testSignalCheckpointsAndExits75ThenResumes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rcli-sig-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try makeSetup(dir)
        let exe = productsDirectory().appendingPathComponent("albef-worker").path
        let out = dir.appendingPathComponent("run").path
        let (p, text) = try startMPIRun(["-n", "2", exe, "finetune-retrieval", "--config", cfg.path, "--output-dir", out,
                                         "--log-every", "1", "--epochs", "200"], log: dir.appendingPathComponent("ft.log").path)
        defer { if p.isRunning { p.terminate() } }
        XCTAssertTrue(waitForText("epoch 0 step 2 |", text, while: p), text())
        kill(p.processIdentifier, SIGUSR1)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 75, text())
        let stop = try XCTUnwrap(signalStopStep(in: text()), text())
        XCTAssertEqual(try String(contentsOfFile: out + "/checkpoints/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
                       String(format: "step_%08d", stop))
        let (s, o) = try runCommand("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2", exe, "finetune-retrieval", "--config",
                                                        cfg.path, "--output-dir", out, "--log-every", "1", "--epochs", "200", "--resume",
                                                        "--max-steps", String(stop + 1)], env: mpiEnvironment)
        XCTAssertEqual(s, 0, o)
        XCTAssertTrue(o.contains("resumed from") && o.contains("step \(stop + 1) | loss_ita"), o)
    }
    /// With a coordinator: `albef-coord serve` leases the re_train JSON corpus (its index from
    /// `albef-data index`) exactly like pretraining data; two ranks fine-tune to the end of the 2
    /// epochs, the coordinator's registry holds the final checkpoint and its ledger every sample
    /// of both epochs.
    func testFinetuneWithCoordinatorLeasesTheJSONCorpusToTheEnd() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rcli-coord-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try makeSetup(dir)
        let bin = productsDirectory()
        let index = dir.appendingPathComponent("re_train.index.json").path
        let (si, oi) = try runCommand(bin.appendingPathComponent("albef-data").path,
                                      ["index", "--corpus", dir.path + "/data/re_train.json", "--out", index, "--entries-per-shard", "16"])
        XCTAssertEqual(si, 0, oi)
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000...60000))"
        let coordLog = dir.appendingPathComponent("coord.log")
        FileManager.default.createFile(atPath: coordLog.path, contents: nil)
        let coord = Process()
        coord.executableURL = bin.appendingPathComponent("albef-coord")
        coord.arguments = ["serve", "--corpus", index, "--bind", endpoint, "--state-dir", dir.path + "/coord", "--world-size", "2",
                           "--epochs", "2", "--lease-size", "8"]
        coord.standardOutput = try FileHandle(forWritingTo: coordLog)
        coord.standardError = coord.standardOutput
        coord.standardInput = FileHandle.nullDevice
        try coord.run()
        defer { if coord.isRunning { coord.terminate() } }
        let exe = bin.appendingPathComponent("albef-worker").path
        let (s, o) = try runCommand("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2", exe, "finetune-retrieval",
                                                        "--config", cfg.path, "--corpus", index, "--coordinator", endpoint,
                                                        "--output-dir", dir.path + "/run", "--log-every", "1"], env: mpiEnvironment)
        let coordText = (try? String(contentsOf: coordLog, encoding: .utf8)) ?? ""
        XCTAssertEqual(s, 0, o + "\n--- coordinator\n" + coordText)
        XCTAssertTrue(o.contains("finished: 2 epoch(s) at step 12"), o)
        let (ss, so) = try runCommand(bin.appendingPathComponent("albef-coord").path, ["status", "--json", "--endpoint", endpoint])
        XCTAssertEqual(ss, 0, so)
        let st = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(so.utf8)) as? [String: Any], so)
        XCTAssertEqual((st["last_checkpoint"] as? [String: Any])?["step"] as? Int, 12, so)
        let model = try SafeTensorsFile(path: dir.path + "/run/checkpoints/step_00000012/model.safetensors")
        XCTAssertTrue(try model.ints("idx_queue").values.allSatisfy { (0..<48).contains($0) })
    }
}
