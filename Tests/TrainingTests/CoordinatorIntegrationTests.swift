import Foundation
import XCTest

/// Coordinator + two real MPI ranks: leases, status, stop at a step boundary with a checkpoint.
final class CoordinatorIntegrationTests: XCTestCase {
    func freePort() -> Int { Int.random(in: 20000...60000) }

    /// A small synthetic corpus (32 px) and a micro model config in a fresh temporary directory.
    func makeCorpusAndConfig(samples: Int) throws -> (URL, URL) {
        let bin = productsDirectory()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coordint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
        let (s0, o0) = try runCommand(bin.appendingPathComponent("albef-data").path,
                                      ["synth", "--out", dir.path + "/corpus", "--samples", String(samples), "--heldout", "10",
                                       "--image-size", "32", "--shard-size", "100"])
        XCTAssertEqual(s0, 0, o0)
        let cfg = dir.appendingPathComponent("micro.yaml")
        try """
        bert: {hidden_size: 32, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 64, vocab_size: 30522,
               hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0, fusion_layer: 2, encoder_width: 32}
        vocab: '\(root.path)/configs/vocab.txt'
        image_res: 32
        vision_width: 32
        vit: {patch_size: 16, depth: 2, num_heads: 2, mlp_ratio: 4}
        embed_dim: 16
        batch_size: 4
        queue_size: 64
        optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}
        schedular: {sched: constant, epochs: 50}
        """.write(to: cfg, atomically: true, encoding: .utf8)
        return (dir, cfg)
    }


    /// Starts `exe args` in the background with stdout+stderr appended to `log`.
    func launch(_ exe: URL, _ args: [String], log: URL, environment: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = exe
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        FileManager.default.createFile(atPath: log.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: log)
        p.standardError = p.standardOutput
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// `albef-coord serve` on the test corpus (2 ranks).
    func startCoordinator(dir: URL, endpoint: String, log: String, extra: [String]) throws -> Process {
        try launch(productsDirectory().appendingPathComponent("albef-coord"),
                   ["serve", "--corpus", dir.path + "/corpus/index.json", "--bind", endpoint, "--state-dir", dir.path + "/coord",
                    "--world-size", "2", "--epochs", "50"] + extra, log: dir.appendingPathComponent(log))
    }

    /// `mpirun -n 2 albef-worker train` against the coordinator; returns the process and its log.
    func startTraining(dir: URL, cfg: URL, endpoint: String, extra: [String]) throws -> (Process, URL) {
        let log = dir.appendingPathComponent("train.log")
        let p = try launch(URL(fileURLWithPath: "/usr/bin/mpirun"),
                           ["--allow-run-as-root", "--oversubscribe", "-n", "2", productsDirectory().appendingPathComponent("albef-worker").path,
                            "train", "--config", cfg.path, "--corpus", dir.path + "/corpus/index.json", "--coordinator", endpoint,
                            "--output-dir", dir.path + "/run", "--log-every", "1"] + extra, log: log, environment: mpiEnvironment)
        return (p, log)
    }

    func testCoordinatorWithTwoMPIRanksStatusAndStop() throws {
        let bin = productsDirectory()
        let (dir, cfg) = try makeCorpusAndConfig(samples: 400)
        let port = freePort()
        let endpoint = "tcp://127.0.0.1:\(port)"
        let coord = try startCoordinator(dir: dir, endpoint: endpoint, log: "coord.log", extra: ["--lease-size", "16"])
        defer { if coord.isRunning { coord.terminate() } }
        // Two ranks under mpirun, reading leases.
        let (train, trainLog) = try startTraining(dir: dir, cfg: cfg, endpoint: endpoint, extra: ["--max-steps", "100000"])
        defer { if train.isRunning { train.terminate() } }
        // status --json shows both ranks, a step and losses.
        var status: [String: Any] = [:]
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline {
            let (s, out) = try runCommand(bin.appendingPathComponent("albef-coord").path, ["status", "--json", "--endpoint", endpoint])
            if s == 0, let d = out.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
               let ranks = o["ranks"] as? [[String: Any]], ranks.count == 2, (o["step"] as? Int ?? 0) >= 3 {
                status = o
                break
            }
            usleep(300_000)
        }
        let log = { (try? String(contentsOf: trainLog, encoding: .utf8)) ?? "" }
        XCTAssertEqual((status["ranks"] as? [Any])?.count, 2, "status never showed 2 ranks at step ≥ 3: \(status)\n\(log())")
        let losses = status["losses"] as? [String: Any]
        XCTAssertGreaterThan(losses?["ita"] as? Double ?? 0, 0, "\(status)")
        // Stop: both ranks stop at the same step, with a checkpoint.
        let (ss, so) = try runCommand(bin.appendingPathComponent("albef-coord").path, ["stop", "--endpoint", endpoint])
        XCTAssertEqual(ss, 0, so)
        let stopDeadline = Date().addingTimeInterval(120)
        while train.isRunning && Date() < stopDeadline { usleep(200_000) }
        XCTAssertFalse(train.isRunning, "ranks did not stop\n\(log())")
        XCTAssertEqual(train.terminationStatus, 0, log())
        let text = log()
        guard let r = text.range(of: "stopped by command at step ") else { return XCTFail("no stop line\n\(text)") }
        let step = Int(text[r.upperBound...].prefix { $0.isNumber }) ?? -1
        XCTAssertGreaterThan(step, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.path + String(format: "/run/checkpoints/step_%08d/model.safetensors", step)), text)
        // The coordinator registered the committed checkpoint.
        let (_, after) = try runCommand(bin.appendingPathComponent("albef-coord").path, ["status", "--json", "--endpoint", endpoint])
        if let d = after.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] {
            let ck = o["last_checkpoint"] as? [String: Any]
            XCTAssertEqual(ck?["step"] as? Int, step, after)
        }
    }

    /// Killing the coordinator mid-run and restarting it on the same state directory: the ranks
    /// keep training (leases prefetched), reconnect, and finish every step; no step is lost.
    func testCoordinatorRestartMidRunLosesNoStep() throws {
        let bin = productsDirectory()
        let (dir, cfg) = try makeCorpusAndConfig(samples: 600)
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let restartFlags = ["--lease-size", "8", "--heartbeat-timeout", "60"]
        var coord = try startCoordinator(dir: dir, endpoint: endpoint, log: "coord1.log", extra: restartFlags)
        defer { if coord.isRunning { coord.terminate() } }
        let steps = 40
        let (train, trainLog) = try startTraining(dir: dir, cfg: cfg, endpoint: endpoint,
                                                  extra: ["--max-steps", String(steps), "--checkpoint-every", "5"])
        defer { if train.isRunning { train.terminate() } }
        let log = { (try? String(contentsOf: trainLog, encoding: .utf8)) ?? "" }
        // Wait for a few steps, then kill the coordinator hard and bring it back.
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline && !log().contains("epoch 0 step 8 |") && train.isRunning { usleep(200_000) }
        XCTAssertTrue(log().contains("epoch 0 step 8 |"), log())
        kill(coord.processIdentifier, SIGKILL)
        coord.waitUntilExit()
        usleep(1_500_000)
        coord = try startCoordinator(dir: dir, endpoint: endpoint, log: "coord2.log", extra: restartFlags)
        let end = Date().addingTimeInterval(240)
        while train.isRunning && Date() < end { usleep(200_000) }
        XCTAssertFalse(train.isRunning, "training did not finish\n\(log())")
        XCTAssertEqual(train.terminationStatus, 0, log())
        let text = log()
        // Every step ran exactly once, in order, and the last checkpoint is the last step.
        for s in 1...steps { XCTAssertTrue(text.contains("step \(s) | loss_ita"), "step \(s) missing\n\(text)") }
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.path + String(format: "/run/checkpoints/step_%08d/model.safetensors", steps)), text)
        // The restarted coordinator knows the job and its last committed checkpoint.
        let (st, out) = try runCommand(bin.appendingPathComponent("albef-coord").path, ["status", "--json", "--endpoint", endpoint])
        XCTAssertEqual(st, 0, out)
        if let d = out.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] {
            XCTAssertEqual((o["ranks"] as? [Any])?.count, 2, out)
            XCTAssertGreaterThanOrEqual((o["last_checkpoint"] as? [String: Any])?["step"] as? Int ?? 0, 10, out)
        }
    }
}
