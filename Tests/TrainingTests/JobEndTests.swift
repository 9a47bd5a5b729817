import Control
import DataPipeline
import Foundation
import Training
import XCTest

/// A coordinated job run to its natural end (no `--max-steps`): the agreed end of each epoch, the
/// epoch-end and final checkpoints, exact accounting, reproducibility across runs, rank kills and
/// coordinator restarts; static sharding's final checkpoint; corpus identity at registration.
extension CoordinatorIntegrationTests {
    /// A corpus of `samples` 32-px samples (shards of 100) and a micro config of per-rank batch 16
    /// with ALBEF's schedule (stair warmup in epoch 0 with steps of 2 iterations, per-epoch cosine)
    /// over 2 epochs.
    func makeJobEndCorpus(samples: Int = 300) throws -> (URL, URL) {
        try makeCorpusAndConfig(samples: samples, batchSize: 16,
                                schedular: "{sched: cosine, lr: 1e-4, epochs: 2, min_lr: 1e-5, warmup_lr: 1e-5, warmup_epochs: 1, warmup_step_size: 2}")
    }

    /// `albef-coord serve` for a 2-epoch job of 2 ranks in `dir/<state>`.
    func startJobCoordinator(dir: URL, endpoint: String, state: String = "coord", log: String = "coord.log",
                             extra: [String] = []) throws -> Process {
        try launch(productsDirectory().appendingPathComponent("albef-coord"),
                   ["serve", "--corpus", dir.path + "/corpus/index.json", "--bind", endpoint, "--state-dir", dir.path + "/" + state,
                    "--world-size", "2", "--epochs", "2", "--lease-size", "64", "--linger", "60"] + extra,
                   log: dir.appendingPathComponent(log))
    }

    /// `mpirun -n 2 albef-worker train` of the job, no `--max-steps`, into `dir/<output>`.
    func startJobTraining(dir: URL, cfg: URL, endpoint: String, output: String, log: String, extra: [String] = []) throws -> (Process, URL) {
        let logURL = dir.appendingPathComponent(log)
        let p = try launch(URL(fileURLWithPath: "/usr/bin/mpirun"),
                           ["--allow-run-as-root", "--oversubscribe", "-n", "2", productsDirectory().appendingPathComponent("albef-worker").path,
                            "train", "--config", cfg.path, "--corpus", dir.path + "/corpus/index.json", "--coordinator", endpoint,
                            "--output-dir", dir.path + "/" + output, "--log-every", "1"] + extra, log: logURL, environment: mpiEnvironment)
        return (p, logURL)
    }

    /// Waits up to `timeout` seconds for `p` to exit; false (and the job killed) if it does not.
    func finishes(_ p: Process, within timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(100_000) }
        if p.isRunning { _ = killJob(p); return false }
        return true
    }

    /// The coordinator's saved state in `dir/<state>`.
    func savedState(_ dir: URL, _ state: String = "coord") throws -> CoordinatorState {
        try JSONDecoder().decode(CoordinatorState.self, from: Data(contentsOf: dir.appendingPathComponent(state + "/state.json")))
    }

    /// Invariant 1 of the job lifecycle: per epoch, the ledger and the dropped ranges hold every
    /// sample exactly once.
    func assertEveryEpochExactlyOnce(_ st: CoordinatorState, epochs: Int, samples: Int, _ context: @autoclosure () -> String) {
        for e in 0..<epochs {
            let trained = st.ledger.filter { $0.epoch == e }, dropped = st.dropped.filter { $0.epoch == e }
            XCTAssertEqual(SampleRange.total(trained) + SampleRange.total(dropped), samples, "epoch \(e): trained + dropped\n\(context())")
            XCTAssertEqual(SampleRange.total(SampleRange.merged(trained + dropped)), samples, "epoch \(e): a sample both trained and dropped\n\(context())")
        }
    }

    /// The real job, as a user runs it: `albef-coord serve --epochs 2` and `mpirun -n 2 albef-worker
    /// train` with no `--max-steps`. It finishes by itself, exit 0; each epoch ends with a committed
    /// checkpoint; the ledger holds every sample of both epochs once (trained, or dropped as the
    /// tail that does not fill a step); the lr of every step is ALBEF's schedule of its real epoch;
    /// the leases of epoch 1 carry epoch 1 into the loader (so crops and flips differ); status says
    /// finished.
    func testCoordinatedJobRunsToItsNaturalEnd() throws {
        let bin = productsDirectory()
        let (dir, cfg) = try makeJobEndCorpus()
        defer { try? FileManager.default.removeItem(at: dir) }
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let coord = try startJobCoordinator(dir: dir, endpoint: endpoint)
        defer { if coord.isRunning { coord.terminate() } }
        let (train, trainLog) = try startJobTraining(dir: dir, cfg: cfg, endpoint: endpoint, output: "run", log: "train.log")
        let log = { (try? String(contentsOf: trainLog, encoding: .utf8)) ?? "" }
        XCTAssertTrue(finishes(train, within: 240), "the job did not finish by itself\n\(log())")
        XCTAssertEqual(train.terminationStatus, 0, log())
        // 300 samples, 2 ranks: each rank's stream is 150 samples = 9 batches of 16 (6 dropped per
        // rank); the 0 samples of tail. 9 steps per epoch.
        XCTAssertTrue(log().contains("finished: 2 epoch(s) at step 18"), log())
        let st = try status(endpoint)
        XCTAssertEqual(st["job_state"] as? String, "done", "\(st)")
        XCTAssertEqual(st["epochs_done"] as? Int, 2, "\(st)")
        XCTAssertEqual(st["dropped_samples"] as? Int, 24, "\(st)")
        let saved = try savedState(dir)
        XCTAssertEqual(saved.checkpoints.map(\.step), [9, 18], "an epoch-end checkpoint each")
        XCTAssertEqual(saved.checkpoints.map(\.epochsDone), [1, 2])
        assertEveryEpochExactlyOnce(saved, epochs: 2, samples: 300, log())
        XCTAssertTrue(saved.leases.isEmpty, "leases left after the end: \(saved.leases)")
        // The lr of each step: ALBEF's schedule at (real epoch, iteration).
        let config = try TrainConfig.load(cfg.path)
        let lines = try String(contentsOf: dir.appendingPathComponent("run/metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 18)
        for line in lines {
            let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let step = try XCTUnwrap(o["step"] as? Int), epoch = try XCTUnwrap(o["epoch"] as? Int), lr = try XCTUnwrap(o["lr"] as? Double)
            XCTAssertEqual(epoch, (step - 1) / 9, "step \(step) is in epoch \((step - 1) / 9)")
            let expected = config.schedule.lr(epoch: epoch, iteration: (step - 1) % 9, globalStep: step - 1)
            XCTAssertEqual(lr, expected, accuracy: 1e-12, "lr of step \(step)")
        }
        XCTAssertNotEqual(config.schedule.lr(epoch: 1, iteration: 0, globalStep: 9), config.schedule.lr(epoch: 0, iteration: 8, globalStep: 8),
                          "the cosine of epoch 1 differs from the warm-up's last rate")
        // The checkpoints: epoch-end ones store the next epoch's start; epoch 1's leases are epoch 1's.
        for (step, epoch) in [(9, 1), (18, 2)] {
            let ck = try JSONDecoder().decode(CheckpointState.self, from: Data(contentsOf: dir.appendingPathComponent(String(format: "run/checkpoints/step_%08d/state.json", step))))
            XCTAssertEqual(ck.epoch, epoch)
            XCTAssertEqual(ck.iteration, 0)
            for r in ck.ranks {
                let uses = try XCTUnwrap(r.leases?.consumed)
                XCTAssertEqual(Set(uses.map(\.epoch)), [UInt32(epoch - 1)], "rank \(r.rank) at step \(step) read leases of epoch \(epoch - 1) only")
                XCTAssertEqual(uses.reduce(0) { $0 + $1.end - $1.start }, 9 * 16)
            }
        }
        // And a range's epoch reaches the augmentation: the same sample, epoch 0 vs epoch 1.
        let index = try CorpusIndex.load(from: dir.appendingPathComponent("corpus/index.json"))
        let tok = try BertTokenizer(vocabularyURL: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../configs/vocab.txt"))
        var lc = DataLoader.Configuration(batchSize: 1, imageSize: 32)
        lc.seed = 42
        func image(epoch: Int) throws -> [Float] {
            let l = try DataLoader(index: index, tokenizer: tok, configuration: lc,
                                   ranges: FixedRangeSource([SampleRange(epoch: epoch, shard: 0, start: 3, end: 4)]))
            defer { l.stop() }
            return try XCTUnwrap(try l.next()).images
        }
        XCTAssertNotEqual(try image(epoch: 0), try image(epoch: 1), "the same sample is augmented differently in epoch 1")
        _ = bin
    }

    /// Reproducible: two identical coordinated runs end with byte-identical weights; so does the
    /// same job with `kill -9` of one rank in epoch 2 and a relaunch with `--resume`, and the same
    /// job with its coordinator SIGKILLed mid-run and restarted from its state directory.
    func testCoordinatedRunsAreReproducibleThroughRankAndCoordinatorKills() throws {
        let (dir, cfg) = try makeJobEndCorpus()
        defer { try? FileManager.default.removeItem(at: dir) }
        let flags = ["--checkpoint-every", "4"]
        func finalWeights(_ output: String) throws -> Data {
            try Data(contentsOf: dir.appendingPathComponent(output + "/checkpoints/step_00000018/model.safetensors"))
        }
        // A and B: two identical runs.
        for name in ["a", "b"] {
            let endpoint = "tcp://127.0.0.1:\(freePort())"
            let coord = try startJobCoordinator(dir: dir, endpoint: endpoint, state: "coord-" + name, log: "coord-\(name).log", extra: ["--linger", "0"])
            defer { if coord.isRunning { coord.terminate() } }
            let (train, log) = try startJobTraining(dir: dir, cfg: cfg, endpoint: endpoint, output: "run-" + name, log: "train-\(name).log", extra: flags)
            XCTAssertTrue(finishes(train, within: 240), (try? String(contentsOf: log, encoding: .utf8)) ?? "")
            XCTAssertEqual(train.terminationStatus, 0, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
        }
        XCTAssertEqual(try finalWeights("run-a"), try finalWeights("run-b"), "two identical coordinated runs")

        // C: kill -9 of one rank in epoch 2 (after checkpoint 12), relaunch with --resume.
        do {
            let endpoint = "tcp://127.0.0.1:\(freePort())"
            let coord = try startJobCoordinator(dir: dir, endpoint: endpoint, state: "coord-c", log: "coord-c.log", extra: ["--linger", "0"])
            defer { if coord.isRunning { coord.terminate() } }
            let (train, logURL) = try startJobTraining(dir: dir, cfg: cfg, endpoint: endpoint, output: "run-c", log: "train-c.log", extra: flags)
            let log = { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
            XCTAssertTrue(waitForText("epoch 1 step 14 |", log, while: train, timeout: 240), log())
            let ranks = processTree(train.processIdentifier).filter { $0 != train.processIdentifier && commandName($0) == "albef-worker" }
            XCTAssertEqual(ranks.count, 2, "rank processes \(ranks)")
            if let victim = ranks.last { kill(victim, SIGKILL) }
            XCTAssertTrue(finishes(train, within: 60), "mpirun did not end after a rank died\n\(log())")
            XCTAssertNotEqual(train.terminationStatus, 0)
            let (again, logURL2) = try startJobTraining(dir: dir, cfg: cfg, endpoint: endpoint, output: "run-c", log: "train-c2.log",
                                                        extra: flags + ["--resume"])
            let log2 = { (try? String(contentsOf: logURL2, encoding: .utf8)) ?? "" }
            XCTAssertTrue(finishes(again, within: 240), log2())
            XCTAssertEqual(again.terminationStatus, 0, log2())
            XCTAssertTrue(log2().contains("resumed from"), log2())
            XCTAssertEqual(try finalWeights("run-c"), try finalWeights("run-a"), "kill -9 of a rank and --resume\n\(log())\n\(log2())")
            assertEveryEpochExactlyOnce(try savedState(dir, "coord-c"), epochs: 2, samples: 300, log2())
        }

        // D: the coordinator SIGKILLed in epoch 1 and restarted on its state directory.
        do {
            let endpoint = "tcp://127.0.0.1:\(freePort())"
            var coord = try startJobCoordinator(dir: dir, endpoint: endpoint, state: "coord-d", log: "coord-d.log", extra: ["--linger", "0"])
            let (train, logURL) = try startJobTraining(dir: dir, cfg: cfg, endpoint: endpoint, output: "run-d", log: "train-d.log", extra: flags)
            let log = { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
            XCTAssertTrue(waitForText("epoch 1 step 11 |", log, while: train, timeout: 240), log())
            kill(coord.processIdentifier, SIGKILL)
            coord.waitUntilExit()
            usleep(500_000)
            coord = try startJobCoordinator(dir: dir, endpoint: endpoint, state: "coord-d", log: "coord-d2.log", extra: ["--linger", "0"])
            defer { if coord.isRunning { coord.terminate() } }
            XCTAssertTrue(finishes(train, within: 240), log())
            XCTAssertEqual(train.terminationStatus, 0, log())
            XCTAssertEqual(try finalWeights("run-d"), try finalWeights("run-a"), "coordinator killed and restarted\n\(log())")
            assertEveryEpochExactlyOnce(try savedState(dir, "coord-d"), epochs: 2, samples: 300, log())
        }
    }

    /// The executable name of process `pid` (from /proc), or "".
    func commandName(_ pid: pid_t) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Corrupts (in place, same size, so the index still matches) the image of every 12th sample
    /// of `shard`: the loader finds them at read time, so the rank whose stream holds that shard
    /// runs out of batches a step before the other — the ranks must agree on the epoch's end.
    func corruptImages(tar: String) throws -> Int {
        let script = """
        import sys, tarfile
        path = sys.argv[1]
        with tarfile.open(path) as t:
            members = [m for m in t.getmembers() if m.name.endswith(('.jpg', '.png'))]
        hits = members[5::12]
        with open(path, 'r+b') as f:
            for m in hits:
                f.seek(m.offset_data); f.write(b'\\0' * 8)
        print(len(hits))
        """
        let (s, out) = try runCommand("/usr/bin/env", ["python3", "-c", script, tar])
        XCTAssertEqual(s, 0, out)
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    /// One rank's leases end a step earlier than the other's (bad samples found at read time in
    /// its stream): no hang, both epochs end at the agreed step, the job finishes, the bad samples
    /// reach the coordinator's status (by kind) and its quarantine file, and the accounting holds.
    func testRanksWhoseDataEndsAtDifferentStepsAgreeOnTheEnd() throws {
        let (dir, cfg) = try makeJobEndCorpus()
        defer { try? FileManager.default.removeItem(at: dir) }
        let index = try CorpusIndex.load(from: dir.appendingPathComponent("corpus/index.json"))
        // Epoch 0's first shard is in rank 0's stream (the first 150 plan positions).
        let first = LeasePlanner.shardOrder(epoch: 0, seed: 0, shardCount: index.shards.count)[0]
        let bad = try corruptImages(tar: index.filePath(first))
        XCTAssertEqual(bad, 8)
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let coord = try startJobCoordinator(dir: dir, endpoint: endpoint)
        defer { if coord.isRunning { coord.terminate() } }
        let (train, logURL) = try startJobTraining(dir: dir, cfg: cfg, endpoint: endpoint, output: "run", log: "train.log")
        let log = { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
        XCTAssertTrue(finishes(train, within: 240), "hang: one rank ran out of batches first\n\(log())")
        XCTAssertEqual(train.terminationStatus, 0, log())
        // Rank 0 has 150 - 8 = 142 good samples in epoch 0: 8 batches, so epoch 0 ends after 8 steps.
        let saved = try savedState(dir)
        XCTAssertEqual(saved.checkpoints.first?.step, 8, "epoch 0 ends at the shorter rank's last full batch\n\(log())")
        XCTAssertEqual(saved.checkpoints.map(\.epochsDone), [1, 2])
        assertEveryEpochExactlyOnce(saved, epochs: 2, samples: 300, log())
        let st = try status(endpoint)
        XCTAssertEqual(st["bad_samples_reported"] as? Int, bad, "\(st)")
        let kinds = st["bad_samples_by_kind"] as? [String: Any]
        XCTAssertEqual(kinds?.values.compactMap { $0 as? Int }.reduce(0, +), bad, "\(st)")
        let quarantine = try String(contentsOf: dir.appendingPathComponent("coord/quarantine.jsonl"), encoding: .utf8)
        XCTAssertEqual(quarantine.split(separator: "\n").count, bad, quarantine)
        XCTAssertTrue(quarantine.contains(index.shards[first].path), quarantine)
    }

    /// A rank started with a different corpus index is refused at registration, with an error
    /// naming both indexes' fingerprints and the fix; it exits with an error, not a hang.
    func testRankWithAnotherCorpusIndexIsRefused() throws {
        let (dir, cfg) = try makeJobEndCorpus()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (s0, o0) = try runCommand(productsDirectory().appendingPathComponent("albef-data").path,
                                      ["synth", "--out", dir.path + "/other", "--samples", "200", "--heldout", "10",
                                       "--image-size", "32", "--shard-size", "100"])
        XCTAssertEqual(s0, 0, o0)
        let mine = try CorpusIndex.load(from: dir.appendingPathComponent("corpus/index.json")).fingerprint
        let other = try CorpusIndex.load(from: dir.appendingPathComponent("other/index.json")).fingerprint
        XCTAssertNotEqual(mine, other)
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let coord = try launch(productsDirectory().appendingPathComponent("albef-coord"),
                               ["serve", "--corpus", dir.path + "/corpus/index.json", "--bind", endpoint, "--state-dir", dir.path + "/coord",
                                "--world-size", "1", "--epochs", "1"], log: dir.appendingPathComponent("coord.log"))
        defer { if coord.isRunning { coord.terminate() } }
        let (s, out) = try runCommand(productsDirectory().appendingPathComponent("albef-worker").path,
                                      ["train", "--config", cfg.path, "--corpus", dir.path + "/other/index.json", "--coordinator", endpoint,
                                       "--output-dir", dir.path + "/run"], timeout: 120)
        XCTAssertNotEqual(s, 0, out)
        XCTAssertTrue(out.contains("refused") && out.contains(mine) && out.contains(other), out)
        XCTAssertTrue(out.contains("--corpus"), "the fix is named: \(out)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.path + "/run/checkpoints"), "nothing trained")
    }

    /// Static sharding (no coordinator) run to its natural end: a checkpoint at each epoch's end,
    /// the last one final, exit 0; resuming it on a world size that cannot split its global batch
    /// (one slot of 16) is refused with an error listing the world sizes that can.
    func testStaticShardingRunsToTheEndAndRefusesAWorldSizeThatCannotSplitItsBatch() throws {
        let (dir, cfg) = try makeJobEndCorpus(samples: 200)
        defer { try? FileManager.default.removeItem(at: dir) }
        let worker = productsDirectory().appendingPathComponent("albef-worker").path
        let common = ["train", "--config", cfg.path, "--corpus", dir.path + "/corpus/index.json", "--output-dir", dir.path + "/run", "--log-every", "1"]
        let (s, out) = try runCommand(worker, common, timeout: 240)
        XCTAssertEqual(s, 0, out)
        // 200 samples, one rank, batch 16: 12 steps per epoch, 2 epochs.
        XCTAssertTrue(out.contains("finished: 2 epoch(s) at step 24"), out)
        let cks = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/run/checkpoints").filter { $0.hasPrefix("step_") }.sorted()
        XCTAssertEqual(cks, ["step_00000012", "step_00000024"], out)
        XCTAssertEqual(Checkpointer.latest(dir.path + "/run")?.lastPathComponent, "step_00000024")
        let final = try Checkpointer.readState(dir.appendingPathComponent("run/checkpoints/step_00000024"))
        XCTAssertEqual(final.epoch, 2)
        XCTAssertEqual(final.iteration, 0)
        // Interrupted in epoch 1 (step 15) and resumed: the same bits as the uninterrupted run.
        let (s3, o3) = try runCommand(worker, common.map { $0 == dir.path + "/run" ? dir.path + "/run2" : $0 } + ["--max-steps", "15"], timeout: 240)
        XCTAssertEqual(s3, 0, o3)
        let (s4, o4) = try runCommand(worker, common.map { $0 == dir.path + "/run" ? dir.path + "/run2" : $0 } + ["--resume"], timeout: 240)
        XCTAssertEqual(s4, 0, o4)
        XCTAssertTrue(o4.contains("resumed from") && o4.contains("step 15, epoch 1, iteration 3"), o4)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("run2/checkpoints/step_00000024/model.safetensors")),
                       try Data(contentsOf: dir.appendingPathComponent("run/checkpoints/step_00000024/model.safetensors")),
                       "resumed in epoch 1 vs uninterrupted")
        // Resuming the finished run trains nothing.
        let (s1, o1) = try runCommand(worker, common + ["--resume"], timeout: 120)
        XCTAssertEqual(s1, 0, o1)
        XCTAssertTrue(o1.contains("already finished"), o1)
        // Another world size: refused.
        let (s2, o2) = try runCommand("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", "2", worker] + common + ["--resume"],
                                      timeout: 120, env: mpiEnvironment)
        XCTAssertNotEqual(s2, 0, o2)
        XCTAssertTrue(o2.contains("2 rank(s) cannot split its 1 slots") && o2.contains("World sizes that work: 1"), o2)
    }
}
