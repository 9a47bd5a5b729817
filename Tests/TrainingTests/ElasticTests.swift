import DataPipeline
import Distributed
import NN
import Foundation
import XCTest
@testable import ALBEF
@testable import Tensor
@testable import Training

/// The slot layout and gradient accumulation, without processes.
final class StepLayoutTests: XCTestCase {
    /// Any cursors on any split: the consumed entries and the re-dealt layout's sequences cover
    /// each slot's stream exactly once, and a layout of one slot per rank is DistributedSampler's.
    func testSlotPlanRedealsEveryRemainingSampleOnce() {
        var rng = RandomGenerator(seed: 9)
        for trial in 0..<200 {
            let b = 1 + rng.int(below: 4), slots = [1, 2, 3, 4, 6, 12][rng.int(below: 6)]
            let count = slots * b * (1 + rng.int(below: 6)) + rng.int(below: slots * b)
            var plan = SlotPlan(slots: slots, batchSize: b)
            var seen = [Int](repeating: 0, count: count)
            for _ in 0..<3 {
                let ranks = (1...slots).filter { slots % $0 == 0 }[rng.int(below: (1...slots).filter { slots % $0 == 0 }.count)]
                var cursors: [Int] = []
                for r in 0..<ranks {
                    let seq = plan.sequence(count: count, rank: r, ranks: ranks)
                    let c = seq.isEmpty ? 0 : rng.int(below: seq.count + 1)
                    for p in seq.prefix(c) { seen[p] += 1 }
                    cursors.append(c)
                }
                plan = plan.advanced(count: count, ranks: ranks, cursors: cursors)
            }
            // What is left after the last layout: the rest of every slot stream.
            for r in 0..<slots { for p in plan.sequence(count: count, rank: r, ranks: slots) { seen[p] += 1 } }
            let dealt = count - count % slots
            XCTAssertEqual(seen.prefix(dealt).filter { $0 != 1 }.count, 0, "trial \(trial): b \(b), slots \(slots), count \(count)")
            XCTAssertEqual(seen.suffix(count - dealt).filter { $0 != 0 }.count, 0, "the tail beyond whole slots is never dealt")
        }
        let fresh = SlotPlan(slots: 3, batchSize: 2)
        XCTAssertEqual(fresh.sequence(count: 20, rank: 1, ranks: 3), stride(from: 1, to: 18, by: 3).map { $0 })
        XCTAssertEqual(fresh.steps(samples: 20), 3)
        // Two micro-steps on one rank read slot 0 then slot 1, b at a time.
        XCTAssertEqual(SlotPlan(slots: 2, batchSize: 2).sequence(count: 8, rank: 0, ranks: 1), [0, 2, 1, 3, 4, 6, 5, 7])
    }

    /// `accum_steps: 2` with per-rank batch B/2 reads the same samples per step as B in one
    /// micro-step (the step's slots interleave the same slice of the epoch's permutation).
    func testHalfBatchWithTwoMicroStepsReadsTheSameSamplesPerStep() {
        let count = 103
        let whole = SlotPlan(slots: 1, batchSize: 8).sequence(count: count, rank: 0, ranks: 1)
        let halves = SlotPlan(slots: 2, batchSize: 4).sequence(count: count, rank: 0, ranks: 1)
        for k in 0..<(count / 8) {
            XCTAssertEqual(Set(whole[(k * 8)..<((k + 1) * 8)]), Set(halves[(k * 8)..<((k + 1) * 8)]), "step \(k)")
        }
        // And on two ranks (B/2 each, one micro-step) the same again.
        let two = (0..<2).map { SlotPlan(slots: 2, batchSize: 4).sequence(count: count, rank: $0, ranks: 2) }
        for k in 0..<(count / 8) {
            XCTAssertEqual(Set(whole[(k * 8)..<((k + 1) * 8)]), Set(two[0][(k * 4)..<((k + 1) * 4)] + two[1][(k * 4)..<((k + 1) * 4)]))
        }
    }

    /// The global batch is kept on resume; a world size that cannot split it is an error listing
    /// the ones that can.
    func testLayoutResizeKeepsTheGlobalBatchOrListsWorldSizesThatWork() throws {
        let four = StepLayout(batchSize: 2, ranks: 4, accumSteps: 3)
        XCTAssertEqual(four.globalBatch, 24)
        XCTAssertEqual(try four.resized(to: 2), StepLayout(batchSize: 2, ranks: 2, accumSteps: 6))
        XCTAssertEqual(try four.resized(to: 3), StepLayout(batchSize: 2, ranks: 3, accumSteps: 4))
        XCTAssertThrowsError(try four.resized(to: 5)) { e in
            XCTAssertTrue("\(e)".contains("World sizes that work: 1, 2, 3, 4, 6, 12"), "\(e)")
        }
        var cfg = TrainConfig.testMicro(batchSize: 4, queueSize: 32)
        cfg.accumSteps = 3
        XCTAssertThrowsError(try cfg.validate(worldSize: 2)) { e in
            XCTAssertTrue("\(e)".contains("queue_size") && "\(e)".contains("accum_steps 3"), "\(e)")
        }
    }

    /// What must be exact: one rank with two micro-steps of batch b computes the very step two
    /// ranks of batch b compute (same slots: data, random streams incl. dropout, momentum update
    /// once, the queue as it was at the step's start, features enqueued in slot order, the same
    /// two-term gradient sum) — bit for bit, over several steps.
    func testTwoMicroStepsOnOneRankEqualTwoRanks() throws {
        var config = TrainConfig.testMicro(batchSize: 4, queueSize: 32, dropout: 0.1)
        let data = SyntheticBatches(batchSize: 4, length: 9, imageRes: 32, vocabSize: 1200, seed: 77)
        let steps = 3
        typealias Final = ([Float], [Float], [Float], Int64, [Double])
        func snapshot(_ t: Trainer, _ losses: [Double]) -> Final {
            let m = t.model
            return (Array(UnsafeBufferPointer(start: m.online!.values.pointer, count: m.online!.count)),
                    Array(UnsafeBufferPointer(start: m.momentum!.values.pointer, count: m.momentum!.count)),
                    m.imageQueue.scalars + m.textQueue.scalars, m.queuePtr.value.values[0], losses)
        }
        let lock = NSLock()
        var ddp: [Int: Final] = [:]
        LocalWorld(size: 2).run { rank, comm in
            let trainer = try! Trainer(config: config, comm: comm, seed: 5)
            var losses: [Double] = []
            for s in 0..<steps {
                let src = SyntheticSource(data, rank: rank, iterationsPerEpoch: 10, layout: trainer.layout)
                try! src.start(epoch: 0, iteration: s)
                losses.append(try! trainer.step([src.next()!], epoch: 0, iteration: s, iterationsPerEpoch: 10).loss)
            }
            lock.lock(); ddp[rank] = snapshot(trainer, losses); lock.unlock()
        }
        config.accumSteps = 2
        let one = try Trainer(config: config, comm: LocalWorld(size: 1).communicators()[0], seed: 5)
        XCTAssertEqual(one.slots, [0, 1])
        var losses: [Double] = []
        let src = SyntheticSource(data, rank: 0, iterationsPerEpoch: 10, layout: one.layout)
        try src.start(epoch: 0, iteration: 0)
        for s in 0..<steps {
            let micro = [try src.next()!, try src.next()!]
            losses.append(try one.step(micro, epoch: 0, iteration: s, iterationsPerEpoch: 10).loss)
        }
        let acc = snapshot(one, losses)
        guard let r0 = ddp[0] else { return XCTFail("rank 0 missing") }
        XCTAssertTrue(acc.0 == r0.0, "parameters: accumulation vs two ranks")
        XCTAssertTrue(acc.1 == r0.1, "momentum parameters")
        XCTAssertTrue(acc.2 == r0.2, "queues")
        XCTAssertEqual(acc.3, r0.3)
        XCTAssertEqual(acc.4, r0.4, "per-step losses")
        XCTAssertEqual(acc.3, Int64(steps * 8 % 32), "each optimizer step enqueued one global batch of 8")
    }
}

/// Resume on other world sizes and gradient accumulation, run as users run them (processes,
/// real corpora, to the natural end of the job).
extension CoordinatorIntegrationTests {
    func records(_ url: URL) throws -> [[String: Any]] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// The `--record-samples` file: steps 1...n in order, each with `global` samples, and per
    /// epoch every sample at most once; returns the samples of each epoch.
    func assertAuditTrail(_ url: URL, steps: Int, global: Int, _ context: String) throws -> [Int: [String]] {
        let lines = try records(url)
        XCTAssertEqual(lines.map { $0["step"] as? Int ?? -1 }, Array(1...steps), "steps are contiguous\n\(context)")
        var perEpoch: [Int: [String]] = [:]
        for l in lines {
            let samples = l["samples"] as? [String] ?? []
            XCTAssertEqual(samples.count, global, "global batch of step \(l["step"] ?? "?")")
            perEpoch[l["epoch"] as? Int ?? -1, default: []] += samples
        }
        for (e, s) in perEpoch { XCTAssertEqual(Set(s).count, s.count, "epoch \(e): a sample trained twice\n\(context)") }
        return perEpoch
    }

    func mpirun(_ n: Int, _ args: [String], timeout: TimeInterval = 300) throws -> (Int32, String) {
        try runCommand("/usr/bin/mpirun", ["--allow-run-as-root", "--oversubscribe", "-n", String(n),
                                            productsDirectory().appendingPathComponent("albef-worker").path] + args,
                       timeout: timeout, env: mpiEnvironment)
    }

    /// Static sharding (no coordinator), resumed 4 → 2 → 3 ranks mid-epoch with `accum_steps`
    /// 3 → 6 → 4 (per-rank batch 2, global batch 24 throughout): steps contiguous, every
    /// sample of each epoch exactly once across the three runs (the 10 of the 250 that do not
    /// fill a step are the epoch's dropped tail), the global batch in metrics.jsonl constant, the
    /// queue pointer advanced by one global batch per step across the changes, and a finished job.
    func testStaticResumeOnFourThenTwoThenThreeRanksTrainsEverySampleOnce() throws {
        let (dir, cfg) = try makeCorpusAndConfig(samples: 250, batchSize: 2, schedular: "{sched: constant, epochs: 2}", queueSize: 48)
        defer { try? FileManager.default.removeItem(at: dir) }
        let common = ["train", "--config", cfg.path, "--corpus", dir.path + "/corpus/index.json", "--output-dir", dir.path + "/run",
                      "--log-every", "1", "--record-samples", dir.path + "/run/samples.jsonl"]
        let (s1, o1) = try mpirun(4, common + ["--accum-steps", "3", "--max-steps", "4"])
        XCTAssertEqual(s1, 0, o1)
        XCTAssertTrue(o1.contains("4 rank(s) × 3 micro-step(s) × batch 2 = global batch 24"), o1)
        let (s2, o2) = try mpirun(2, common + ["--resume", "--max-steps", "13"])
        XCTAssertEqual(s2, 0, o2)
        XCTAssertTrue(o2.contains("continuing with 2 rank(s) × 6 micro-step(s) × batch 2 = global batch 24"), o2)
        XCTAssertTrue(o2.contains("world size 4 → 2"), o2)
        let (s3, o3) = try mpirun(3, common + ["--resume"])
        XCTAssertEqual(s3, 0, o3)
        XCTAssertTrue(o3.contains("continuing with 3 rank(s) × 4 micro-step(s)"), o3)
        XCTAssertTrue(o3.contains("finished: 2 epoch(s) at step 20"), o3)
        let all = o1 + o2 + o3
        let perEpoch = try assertAuditTrail(dir.appendingPathComponent("run/samples.jsonl"), steps: 20, global: 24, all)
        XCTAssertEqual(perEpoch[0]?.count, 240, all)
        XCTAssertEqual(perEpoch[1]?.count, 240, all)
        let metrics = try records(dir.appendingPathComponent("run/metrics.jsonl"))
        XCTAssertEqual(Set(metrics.compactMap { $0["global_batch"] as? Int }), [24])
        XCTAssertEqual(metrics.compactMap { $0["world_size"] as? Int }, Array(repeating: 4, count: 4) + Array(repeating: 2, count: 9) + Array(repeating: 3, count: 7))
        for (step, ptr) in [(4, 4 * 24 % 48), (13, 13 * 24 % 48), (20, 0)] {
            let f = try SafeTensorsFile(path: dir.path + String(format: "/run/checkpoints/step_%08d/model.safetensors", step))
            XCTAssertEqual(try f.ints("queue_ptr").values[0], Int64(ptr), "queue_ptr at step \(step)")
        }
        // A world size that cannot split the 12 slots: a clear error naming the ones that can.
        let (s4, o4) = try mpirun(5, common + ["--resume"], timeout: 120)
        XCTAssertNotEqual(s4, 0, o4)
        XCTAssertTrue(o4.contains("World sizes that work: 1, 2, 3, 4, 6, 12"), o4)
    }

    /// Gradient accumulation run to the natural end and interrupted: one rank with
    /// `--accum-steps 2`, stopped mid-epoch and resumed, ends with the bytes of two ranks without
    /// accumulation run uninterrupted (the same slots), and both audit trails are the same.
    func testAccumulationOnOneRankResumedEqualsTwoRanksUninterrupted() throws {
        let (dir, cfg) = try makeCorpusAndConfig(samples: 120, batchSize: 4, schedular: "{sched: constant, epochs: 2}", queueSize: 32)
        defer { try? FileManager.default.removeItem(at: dir) }
        func args(_ out: String) -> [String] {
            ["train", "--config", cfg.path, "--corpus", dir.path + "/corpus/index.json", "--output-dir", dir.path + "/" + out,
             "--log-every", "1", "--record-samples", dir.path + "/" + out + "/samples.jsonl"]
        }
        let (s1, o1) = try mpirun(2, args("ddp"))
        XCTAssertEqual(s1, 0, o1)
        XCTAssertTrue(o1.contains("finished: 2 epoch(s) at step 30"), o1)
        let worker = productsDirectory().appendingPathComponent("albef-worker").path
        let (s2, o2) = try runCommand(worker, args("acc") + ["--accum-steps", "2", "--max-steps", "19"], timeout: 300)
        XCTAssertEqual(s2, 0, o2)
        let (s3, o3) = try runCommand(worker, args("acc") + ["--resume"], timeout: 300)
        XCTAssertEqual(s3, 0, o3)
        XCTAssertTrue(o3.contains("finished: 2 epoch(s) at step 30"), o3)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("acc/checkpoints/step_00000030/model.safetensors")),
                       try Data(contentsOf: dir.appendingPathComponent("ddp/checkpoints/step_00000030/model.safetensors")),
                       "1 rank × 2 micro-steps (resumed at step 19) vs 2 ranks")
        let a = try records(dir.appendingPathComponent("acc/samples.jsonl")).map { $0["samples"] as! [String] }
        let d = try records(dir.appendingPathComponent("ddp/samples.jsonl")).map { $0["samples"] as! [String] }
        XCTAssertEqual(a, d)
        _ = try assertAuditTrail(dir.appendingPathComponent("acc/samples.jsonl"), steps: 30, global: 8, o2 + o3)
    }

    /// The checkpoint records its config: resuming with another model shape is an error naming
    /// the key and both values; another learning rate is listed.
    func testResumeWithAnotherModelShapeIsRefusedAndChangesAreListed() throws {
        let (dir, cfg) = try makeCorpusAndConfig(samples: 60, batchSize: 4, schedular: "{sched: constant, epochs: 1}", queueSize: 32)
        defer { try? FileManager.default.removeItem(at: dir) }
        let worker = productsDirectory().appendingPathComponent("albef-worker").path
        let common = ["train", "--corpus", dir.path + "/corpus/index.json", "--output-dir", dir.path + "/run", "--log-every", "1"]
        let (s1, o1) = try runCommand(worker, common + ["--config", cfg.path, "--max-steps", "2"], timeout: 120)
        XCTAssertEqual(s1, 0, o1)
        let state = try Checkpointer.readState(dir.appendingPathComponent("run/checkpoints/step_00000002"))
        XCTAssertEqual(state.trainConfig?.shape["embed_dim"], "16")
        XCTAssertTrue(state.trainConfig?.text?.contains("queue_size: 32") ?? false)
        let text = try String(contentsOf: cfg, encoding: .utf8)
        let wider = dir.appendingPathComponent("wider.yaml")
        try text.replacingOccurrences(of: "embed_dim: 16", with: "embed_dim: 8").write(to: wider, atomically: true, encoding: .utf8)
        let (s2, o2) = try runCommand(worker, common + ["--config", wider.path, "--resume"], timeout: 120)
        XCTAssertEqual(s2, 2, o2)
        XCTAssertTrue(o2.contains("embed_dim 16 → 8") && o2.contains("another model shape"), o2)
        let (s3, o3) = try runCommand(worker, common + ["--config", cfg.path, "--resume", "--lr", "5e-5", "--max-steps", "3"], timeout: 120)
        XCTAssertEqual(s3, 0, o3)
        XCTAssertTrue(o3.contains("optimizer.lr changed since the checkpoint: 0.0001 → 5e-05"), o3)
    }
}

/// Automatic recovery: `cluster/albef-launch` restarts the job after a failure.
extension CoordinatorIntegrationTests {
    var launcher: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../cluster/albef-launch").standardized.path
    }

    /// A rank killed with SIGKILL mid-epoch (between checkpoints): the launcher restarts the job
    /// by itself from the last committed checkpoint and it runs to its natural end; the steps
    /// trained after that checkpoint were rolled back, so the audit trail holds every step once
    /// and every sample at most once per epoch; the log names the failure, the restart and the
    /// recovery time.
    func testLauncherRestartsAfterARankIsKilledAndEverySampleIsTrainedOnce() throws {
        let (dir, cfg) = try makeCorpusAndConfig(samples: 250, batchSize: 2, schedular: "{sched: constant, epochs: 2}", queueSize: 48)
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = dir.appendingPathComponent("launch.log")
        let run = dir.appendingPathComponent("run")
        let p = try launch(URL(fileURLWithPath: launcher),
                           ["-n", "2", "--bin", productsDirectory().appendingPathComponent("albef-worker").path, "--",
                            "--config", cfg.path, "--corpus", dir.path + "/corpus/index.json", "--output-dir", run.path,
                            "--log-every", "1", "--checkpoint-every", "20", "--record-samples", run.path + "/samples.jsonl"],
                           log: log, environment: mpiEnvironment.merging(["ALBEF_LAUNCH_BACKOFF": "0"]) { $1 })
        // Wait for step 24 (checkpoint 20 committed, steps after it), then kill rank 1 (before step 40).
        let deadline = Date().addingTimeInterval(120)
        var killed: Int32 = 0
        while Date() < deadline && killed == 0 {
            let last = (try? String(contentsOf: run.appendingPathComponent("metrics.jsonl"), encoding: .utf8))?.split(separator: "\n").last
            let step = last.flatMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int } ?? 0
            if step >= 24 {
                let (_, pids) = try runCommand("/usr/bin/pgrep", ["-f", "^[^ ]*albef-worker train --resume --config " + cfg.path])
                if let pid = pids.split(separator: "\n").compactMap({ Int32($0) }).max() { kill(pid, SIGKILL); killed = pid }
            }
            usleep(50_000)
        }
        XCTAssertNotEqual(killed, 0, "never reached step 24")
        XCTAssertTrue(finishes(p, within: 240), "the launcher did not finish")
        let out = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        XCTAssertEqual(p.terminationStatus, 0, out)
        XCTAssertTrue(out.contains("failure: exit status") && out.contains("restarting from checkpoint step"), out)
        XCTAssertTrue(out.contains("recovery: restart 1 after exit status"), out)
        XCTAssertTrue(out.contains("after the failure"), out)
        XCTAssertTrue(out.contains("finished: 2 epoch(s) at step 124"), out)
        XCTAssertTrue(out.contains("training ended normally after 1 restart(s)"), out)
        let perEpoch = try assertAuditTrail(run.appendingPathComponent("samples.jsonl"), steps: 124, global: 4, out)
        XCTAssertEqual(perEpoch[0]?.count, 248)
        // Steps trained after the checkpoint the restart resumed from were rolled back: kept aside.
        func number(after marker: String) -> Int? {
            out.range(of: marker).flatMap { Int(out[$0.upperBound...].prefix { $0.isNumber }) }
        }
        if let logged = number(after: "last logged step "), let from = number(after: "restarting from checkpoint step "), logged > from {
            let aside = try records(URL(fileURLWithPath: run.path + "/samples.jsonl.rolled-back")).compactMap { $0["step"] as? Int }
            XCTAssertEqual(aside.first, from + 1, out)
        }
    }

    /// A job that fails every time stops after MAX_RESTARTS restarts with a clear message and the
    /// failure's status, not a loop.
    func testLauncherGivesUpAfterMaxRestarts() throws {
        let (dir, cfg) = try makeCorpusAndConfig(samples: 20, batchSize: 2, schedular: "{sched: constant, epochs: 1}", queueSize: 48)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (s, out) = try runCommand(launcher, ["-n", "1", "--max-restarts", "2", "--bin", productsDirectory().appendingPathComponent("albef-worker").path, "--",
                                                 "--config", cfg.path, "--corpus", dir.path + "/missing/index.json", "--output-dir", dir.path + "/run"],
                                      timeout: 120, env: mpiEnvironment.merging(["ALBEF_LAUNCH_BACKOFF": "0"]) { $1 })
        XCTAssertNotEqual(s, 0, out)
        XCTAssertEqual(out.components(separatedBy: "albef-launch: launch ").count - 1, 3, out)
        XCTAssertTrue(out.contains("giving up: the job failed 3 time(s) (MAX_RESTARTS=2)"), out)
    }
}

/// Elastic world size with a coordinator.
extension CoordinatorIntegrationTests {
    /// A coordinated 2-rank job loses a rank (SIGKILL) in epoch 1 and is relaunched as one rank
    /// (a node gone): the coordinator rolls back to the last committed checkpoint and re-plans the
    /// unconsumed rest of the epoch for the new world; the rank takes the checkpoint's global
    /// batch as 2 micro-steps. The job finishes with the same number of steps, the ledger and the
    /// audit trail hold every sample of each epoch exactly once, and the coordinator's history
    /// names the world size change.
    func testCoordinatedJobContinuesOnFewerRanksAfterLosingOne() throws {
        let (dir, cfg) = try makeJobEndCorpus()
        defer { try? FileManager.default.removeItem(at: dir) }
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let coord = try startJobCoordinator(dir: dir, endpoint: endpoint, extra: ["--linger", "0"])
        defer { if coord.isRunning { coord.terminate() } }
        let record = dir.path + "/run/samples.jsonl"
        let flags = ["--checkpoint-every", "4", "--record-samples", record]
        let (train, logURL) = try startJobTraining(dir: dir, cfg: cfg, endpoint: endpoint, output: "run", log: "train.log", extra: flags)
        let log = { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
        XCTAssertTrue(waitForText("epoch 0 step 6 |", log, while: train, timeout: 240), log())
        let ranks = processTree(train.processIdentifier).filter { $0 != train.processIdentifier && commandName($0) == "albef-worker" }
        if let victim = ranks.last { kill(victim, SIGKILL) }
        XCTAssertTrue(finishes(train, within: 60), "mpirun did not end after a rank died\n\(log())")
        let worker = productsDirectory().appendingPathComponent("albef-worker").path
        let (s, out) = try runCommand(worker, ["train", "--config", cfg.path, "--corpus", dir.path + "/corpus/index.json", "--coordinator", endpoint,
                                               "--output-dir", dir.path + "/run", "--log-every", "1", "--resume"] + flags, timeout: 300)
        XCTAssertEqual(s, 0, out)
        XCTAssertTrue(out.contains("continuing with 1 rank(s) × 2 micro-step(s) × batch 16 = global batch 32"), out)
        XCTAssertTrue(out.contains("finished: 2 epoch(s) at step 18"), out)
        let st = try savedState(dir)
        assertEveryEpochExactlyOnce(st, epochs: 2, samples: 300, out)
        XCTAssertTrue(st.events.contains { $0.contains("world size 2 → 1") }, "\(st.events)")
        let perEpoch = try assertAuditTrail(URL(fileURLWithPath: record), steps: 18, global: 32, log() + out)
        XCTAssertEqual(perEpoch[0]?.count, 9 * 32)
        // The ledger's trained samples of each epoch are the audit trail's.
        for e in 0..<2 {
            XCTAssertEqual(SampleRange.total(st.ledger.filter { $0.epoch == e }), perEpoch[e]?.count, "epoch \(e): ledger vs record")
        }
    }
}
