import Control
import Foundation
import Training
import XCTest

/// Coordinator + two real MPI ranks: leases, status, stop at a step boundary with a checkpoint.
final class CoordinatorIntegrationTests: XCTestCase {
    func freePort() -> Int { Int.random(in: 20000...60000) }

    /// A small synthetic corpus (32 px) and a micro model config in a fresh temporary directory.
    func makeCorpusAndConfig(samples: Int, batchSize: Int = 4,
                             schedular: String = "{sched: constant, epochs: 50}", queueSize: Int = 64) throws -> (URL, URL) {
        let bin = productsDirectory()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("coordint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let (s0, o0) = try runCommand(bin.appendingPathComponent("albef-data").path,
                                      ["synth", "--out", dir.path + "/corpus", "--samples", String(samples), "--heldout", "10",
                                       "--image-size", "32", "--shard-size", "100"])
        XCTAssertEqual(s0, 0, o0)
        let cfg = try writeMicroConfig(in: dir, batchSize: batchSize, schedular: schedular, queueSize: queueSize)
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
    func startTraining(dir: URL, cfg: URL, endpoint: String, extra: [String], log name: String = "train.log") throws -> (Process, URL) {
        let log = dir.appendingPathComponent(name)
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

    /// SIGUSR1 to `mpirun` with a coordinator: the ranks checkpoint at the next step, the commit is
    /// acknowledged before they exit (status 75), and the coordinator's registry holds that step.
    func testSignalStopCommitsTheCheckpointToTheCoordinator() throws {
        let bin = productsDirectory()
        let (dir, cfg) = try makeCorpusAndConfig(samples: 400)
        defer { try? FileManager.default.removeItem(at: dir) }
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let coord = try startCoordinator(dir: dir, endpoint: endpoint, log: "coord.log", extra: ["--lease-size", "16"])
        defer { if coord.isRunning { coord.terminate() } }
        let (train, trainLog) = try startTraining(dir: dir, cfg: cfg, endpoint: endpoint, extra: ["--max-steps", "100000"])
        defer { if train.isRunning { train.terminate() } }
        let log = { (try? String(contentsOf: trainLog, encoding: .utf8)) ?? "" }
        XCTAssertTrue(waitForText("epoch 0 step 3 |", log, while: train), log())
        kill(train.processIdentifier, SIGUSR1)
        let stopDeadline = Date().addingTimeInterval(120)
        while train.isRunning && Date() < stopDeadline { usleep(100_000) }
        XCTAssertFalse(train.isRunning, log())
        XCTAssertEqual(train.terminationStatus, 75, log())
        let text = log()
        guard let step = signalStopStep(in: text) else { return XCTFail("no stop line\n\(text)") }
        XCTAssertGreaterThanOrEqual(step, 3)
        XCTAssertFalse(text.contains("did not acknowledge"), text)
        let (_, after) = try runCommand(bin.appendingPathComponent("albef-coord").path, ["status", "--json", "--endpoint", endpoint])
        let o = after.data(using: .utf8).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        XCTAssertEqual((o?["last_checkpoint"] as? [String: Any])?["step"] as? Int, step, after)
    }

    /// Killing the coordinator (SIGKILL) mid-run, just as rank 0 commits a checkpoint, and
    /// restarting it on the same state directory: the ranks keep training on prefetched leases,
    /// reconnect and finish. Then, exactly: every step ran once; every checkpoint the ranks wrote
    /// is in the coordinator's registry with the same positions; the lease samples the ranks
    /// trained on (recorded in their checkpoints) are the coordinator's ledger, checkpoint by
    /// checkpoint, with no sample twice; together with the live leases they are exactly the
    /// planned prefix of the epoch; and every lease granted before the kill was read by the rank
    /// it was granted to (or is still held by it), never re-issued.
    func testCoordinatorRestartMidRunLosesNoLeaseAndNoStep() throws {
        let bin = productsDirectory()
        let (dir, cfg) = try makeCorpusAndConfig(samples: 600)
        defer { try? FileManager.default.removeItem(at: dir) }
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let restartFlags = ["--lease-size", "8", "--heartbeat-timeout", "60"]
        var coord = try startCoordinator(dir: dir, endpoint: endpoint, log: "coord1.log", extra: restartFlags)
        defer { if coord.isRunning { coord.terminate() } }
        let steps = 40, every = 5, ranks = 2, batch = 4
        let (train, trainLog) = try startTraining(dir: dir, cfg: cfg, endpoint: endpoint,
                                                  extra: ["--max-steps", String(steps), "--checkpoint-every", String(every)])
        defer { if train.isRunning { train.terminate() } }
        let log = { (try? String(contentsOf: trainLog, encoding: .utf8)) ?? "" }
        // Kill the coordinator the moment checkpoint 10 is being committed (the commit may be in
        // flight, handled but not yet durable, or durable), then bring it back.
        let killAt = "/run/checkpoints/step_00000010"
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline && !log().contains(killAt) && train.isRunning { usleep(20_000) }
        XCTAssertTrue(log().contains(killAt), log())
        kill(coord.processIdentifier, SIGKILL)
        coord.waitUntilExit()
        let stateURL = dir.appendingPathComponent("coord/state.json")
        let beforeKill = try JSONDecoder().decode(CoordinatorState.self, from: Data(contentsOf: stateURL))
        usleep(1_500_000)
        coord = try startCoordinator(dir: dir, endpoint: endpoint, log: "coord2.log", extra: restartFlags)
        let end = Date().addingTimeInterval(240)
        while train.isRunning && Date() < end { usleep(200_000) }
        XCTAssertFalse(train.isRunning, "training did not finish\n\(log())")
        XCTAssertEqual(train.terminationStatus, 0, log())
        let text = log()
        XCTAssertFalse(text.contains("did not acknowledge"), text)
        // The worker waits for the final commit's acknowledgement, sent only once it is on disk.
        let final = try JSONDecoder().decode(CoordinatorState.self, from: Data(contentsOf: stateURL))
        try assertExactAccounting(dir: dir, steps: steps, every: every, ranks: ranks, batch: batch,
                                  beforeKill: beforeKill, final: final, context: text)
        // The restarted coordinator serves the job: both ranks, the last checkpoint.
        let (st, out) = try runCommand(bin.appendingPathComponent("albef-coord").path, ["status", "--json", "--endpoint", endpoint])
        XCTAssertEqual(st, 0, out)
        if let d = out.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] {
            XCTAssertEqual((o["ranks"] as? [Any])?.count, 2, out)
            XCTAssertEqual((o["last_checkpoint"] as? [String: Any])?["step"] as? Int, steps, out)
        }
    }

    /// The steps logged in `run/metrics.jsonl`, in order.
    func loggedSteps(_ dir: URL) throws -> [Int] {
        let lines = try String(contentsOf: dir.appendingPathComponent("run/metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        return try lines.map { line -> Int in
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return try XCTUnwrap(o?["step"] as? Int)
        }
    }

    /// The exact-accounting checks of the restart test (see there), on the run's files. With
    /// `relaunch` (the ranks were killed after step `killedAt` and relaunched from checkpoint
    /// `resumedFrom`), the dead attempt's steps after the checkpoint are in the metrics once more and
    /// the relaunched processes' loaders count from the checkpoint; the checkpoints and the ledger
    /// are the surviving lineage's, as without a relaunch.
    func assertExactAccounting(dir: URL, steps: Int, every: Int, ranks: Int, batch: Int,
                               beforeKill: CoordinatorState?, final: CoordinatorState, context: String,
                               relaunch: (killedAt: Int, resumedFrom: Int)? = nil) throws {
        // 1. metrics.jsonl: steps 1...steps, each once, in order (no gap, no repeat across the
        //    restart); after a relaunch, the steps run after the checkpoint by the dead ranks, then
        //    every step after the checkpoint once.
        let expectedSteps = relaunch.map { Array(1...$0.killedAt) + Array(($0.resumedFrom + 1)...steps) } ?? Array(1...steps)
        XCTAssertEqual(try loggedSteps(dir), expectedSteps, "metrics steps")

        // 2. The ranks' checkpoints: where each rank's loader stood and which lease samples it read.
        let ckDir = dir.appendingPathComponent("run/checkpoints")
        let written = try FileManager.default.contentsOfDirectory(atPath: ckDir.path).filter { $0.hasPrefix("step_") }.sorted()
        XCTAssertEqual(written, stride(from: every, through: steps, by: every).map { String(format: "step_%08d", $0) })
        var worker: [(step: UInt64, state: CheckpointState)] = []
        for name in written {
            let st = try JSONDecoder().decode(CheckpointState.self, from: Data(contentsOf: ckDir.appendingPathComponent(name + "/state.json")))
            worker.append((UInt64(st.step), st))
            XCTAssertEqual(st.ranks.map(\.rank), Array(0..<ranks))
            for r in st.ranks {
                let pos = try JSONSerialization.jsonObject(with: Data((r.dataPosition ?? "{}").utf8)) as? [String: Any]
                // The loader's cursor counts the samples this process read (a relaunched one starts at 0).
                let processStart = relaunch.map { st.step > $0.resumedFrom ? $0.resumedFrom : 0 } ?? 0
                XCTAssertEqual(pos?["cursor"] as? Int, (st.step - processStart) * batch,
                               "rank \(r.rank) at step \(st.step) read exactly (step - \(processStart)) × batch samples")
                let account = try XCTUnwrap(r.leases, "checkpoint \(name) rank \(r.rank) has no lease account")
                XCTAssertEqual(account.consumed.reduce(0) { $0 + $1.end - $1.start }, UInt64(every * batch),
                               "rank \(r.rank) read \(every)×\(batch) lease samples between checkpoints (step \(st.step))")
            }
        }

        // 3. The coordinator registered every checkpoint, with the ranks' positions, and its ranges
        //    for each are exactly what the ranks read since the previous one.
        XCTAssertEqual(final.checkpoints.map(\.step), worker.map(\.step), "checkpoint registry\n\(context)")
        for (record, (step, st)) in zip(final.checkpoints, worker) {
            XCTAssertEqual(record.positions, st.ranks.map { DataPosition(rank: Int32($0.rank), leaseId: $0.leases?.leaseId ?? 0, offset: $0.leases?.offset ?? 0) },
                           "positions of checkpoint \(step)")
            let read = st.ranks.flatMap { $0.leases?.consumed ?? [] }.map(\.range)
            XCTAssertEqual(record.ranges, SampleRange.merged(read), "ranges committed by checkpoint \(step)")
            XCTAssertEqual(record.committedSamples, step * UInt64(ranks * batch), "samples committed through checkpoint \(step)")
        }

        // 4. No sample was read twice, and no lease was read by two ranks.
        var owner: [UInt64: Int] = [:]
        var uses: [(rank: Int, use: LeaseAccount.Use)] = []
        for (_, st) in worker {
            for r in st.ranks {
                for u in r.leases?.consumed ?? [] {
                    uses.append((r.rank, u))
                    XCTAssertEqual(owner[u.leaseId, default: r.rank], r.rank, "lease \(u.leaseId) read by two ranks")
                    owner[u.leaseId] = r.rank
                }
            }
        }
        let read = uses.map(\.use.range)
        let readTotal = read.reduce(0) { $0 + $1.count }
        XCTAssertEqual(readTotal, steps * ranks * batch, "lease samples read")
        XCTAssertEqual(SampleRange.merged(read).reduce(0) { $0 + $1.count }, readTotal, "a sample was read twice")
        XCTAssertEqual(final.ledger, SampleRange.merged(read), "the coordinator's ledger is what the ranks read")
        XCTAssertEqual(final.checkpoints.flatMap(\.ranges).reduce(0) { $0 + $1.count }, readTotal, "checkpoints overlap")

        // 5. Per rank, read ∪ unread parts of its live leases ∪ its planner queue = exactly its
        //    stream of the epoch, with no overlap (nothing lost, nothing handed out twice, no lease
        //    of one rank's stream granted to another).
        XCTAssertEqual(final.planner.rankEpoch.max(), 0, "the test stays within epoch 0")
        var readOfLease: [UInt64: UInt64] = [:]
        for (_, u) in uses { readOfLease[u.leaseId, default: 0] += u.end - u.start }
        let bounds = final.planner.streamBoundaries(epoch: 0)
        for r in 0..<ranks {
            var accounted = uses.filter { $0.rank == r }.map(\.use.range)
            for record in final.leases.values where record.rank == Int32(r) {
                XCTAssertNil(record.returnedConsumed, "lease \(record.lease.id) was finished but not settled by the final checkpoint")
                XCTAssertEqual(record.committedOffset, readOfLease[record.lease.id] ?? 0, "lease \(record.lease.id): committed = read")
                accounted.append(record.lease.range(from: record.committedOffset))
            }
            accounted += final.planner.queues[r]
            let stream = final.planner.ranges(epoch: 0, from: bounds[r], to: bounds[r + 1])
            XCTAssertEqual(SampleRange.total(accounted), bounds[r + 1] - bounds[r], "rank \(r): samples of its stream (overlap or loss)")
            XCTAssertEqual(SampleRange.merged(accounted), SampleRange.merged(stream), "rank \(r): its stream vs the plan")
        }

        // 6. Leases granted before the kill were honoured: read by the rank they were granted to,
        //    from where the snapshot said, to their end, or still held by that rank.
        guard let beforeKill else { return }
        XCTAssertFalse(beforeKill.leases.isEmpty, "the kill found no granted lease")
        var readAfterKill = 0
        let killCheckpoint = beforeKill.checkpoints.last?.step ?? 0
        for (id, before) in beforeKill.leases {
            let l = before.lease
            let mine = uses.filter { $0.use.leaseId == id }
            XCTAssertTrue(mine.allSatisfy { $0.rank == Int(before.rank) }, "lease \(id) of rank \(before.rank) read by another rank")
            XCTAssertTrue(mine.allSatisfy { $0.use.shard == l.shard && $0.use.epoch == l.epoch && $0.use.start >= l.start && $0.use.end <= l.end },
                          "lease \(id) read outside its range")
            let readCount = mine.reduce(0) { $0 + $1.use.end - $1.use.start }
            if let now = final.leases[id] {
                XCTAssertEqual(now.rank, before.rank, "lease \(id) moved to another rank")
                XCTAssertEqual(now.lease, l, "lease \(id) changed")
            } else {
                XCTAssertEqual(readCount, l.count, "lease \(id) (rank \(before.rank)) was dropped: \(readCount) of \(l.count) samples read")
            }
            XCTAssertGreaterThanOrEqual(readCount, before.committedOffset)
            if worker.contains(where: { $0.step > killCheckpoint && $0.state.ranks.contains { $0.leases?.consumed.contains { $0.leaseId == id } == true } }) {
                readAfterKill += 1
            }
        }
        XCTAssertGreaterThan(readAfterKill, 0, "no lease granted before the kill was read after it")
    }
}

extension CoordinatorIntegrationTests {
    /// `pid` and every process below it, from /proc (parents before children).
    func processTree(_ pid: pid_t) -> [pid_t] {
        var parent: [pid_t: pid_t] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let p = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // "pid (comm) state ppid ...": the command name may contain spaces, so split after ')'.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let pp = pid_t(fields[1]) { parent[p] = pp }
        }
        var tree = [pid], i = 0
        while i < tree.count {
            tree += parent.filter { $0.value == tree[i] }.map(\.key).sorted()
            i += 1
        }
        return tree
    }

    /// SIGKILLs the mpirun job `train` and its ranks at once (as a node loss or `kill -9` of the
    /// job would), waits until they are gone, and returns the rank process ids.
    func killJob(_ train: Process) -> [pid_t] {
        let tree = processTree(train.processIdentifier)
        for p in tree { kill(p, SIGKILL) }
        train.waitUntilExit()
        let deadline = Date().addingTimeInterval(10)
        func alive(_ p: pid_t) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
            return !stat[stat.index(after: close)...].hasPrefix(" Z")
        }
        while tree.contains(where: alive) && Date() < deadline { usleep(10_000) }
        XCTAssertFalse(tree.contains(where: alive), "processes of the killed job survive: \(tree.filter(alive))")
        return Array(tree.dropFirst())
    }

    /// `albef-coord status --json` as a dictionary (empty when unreachable).
    func status(_ endpoint: String) throws -> [String: Any] {
        let (s, out) = try runCommand(productsDirectory().appendingPathComponent("albef-coord").path, ["status", "--json", "--endpoint", endpoint])
        guard s == 0, let d = out.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else { return [:] }
        return o
    }

    /// Every rank of a running job is killed (SIGKILL of mpirun and its ranks) a few steps after a
    /// checkpoint was committed, while the coordinator keeps running; the job is relaunched with
    /// `--resume` against the same coordinator, before its heartbeat timeout noticed (or, with
    /// `afterTimeout`, once it declared the ranks lost and failed the job). Then, exactly: every
    /// step after the checkpoint ran once more and none is missing; every checkpoint on disk is in
    /// the coordinator's registry with its positions; the samples the surviving lineage read are
    /// the ledger, with no sample twice, and with the live leases and the re-issue queue exactly
    /// the planned prefix of the epoch; and no lease of the dead processes was read after the
    /// relaunch: what they had read (or held) since the checkpoint was revoked and re-issued.
    ///
    /// With `uncommittedCheckpoint`, the ranks are taken to have died between writing their next
    /// checkpoint and committing it: that checkpoint is on disk (and `latest`), unknown to the
    /// coordinator; the relaunch must pass over it and resume from the committed one.
    func runRanksKilledAndRelaunched(afterTimeout: Bool, uncommittedCheckpoint: Bool = false) throws {
        let (dir, cfg) = try makeCorpusAndConfig(samples: 600)
        defer { try? FileManager.default.removeItem(at: dir) }
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let coord = try startCoordinator(dir: dir, endpoint: endpoint, log: "coord.log",
                                         extra: ["--lease-size", "8", "--heartbeat-timeout", afterTimeout ? "5" : "60"])
        defer { if coord.isRunning { coord.terminate() } }
        let steps = 40, every = 5, ranks = 2, batch = 4
        let flags = ["--max-steps", String(steps), "--checkpoint-every", String(every)]
        let (train, trainLog) = try startTraining(dir: dir, cfg: cfg, endpoint: endpoint, extra: flags)
        defer { if train.isRunning { _ = killJob(train) } }
        let log = { (try? String(contentsOf: trainLog, encoding: .utf8)) ?? "" }
        // Kill the ranks a step after checkpoint 15 (a few more run while the kill is on its way),
        // once the coordinator holds a lease they returned with samples read after the committed
        // checkpoint: the case under test. The return travels on the client's own thread, so on a
        // loaded machine it may reach the coordinator a few steps after the log line.
        let stateURL = dir.appendingPathComponent("coord/state.json")
        func returnedAfterCheckpoint() -> Bool {
            guard let d = try? Data(contentsOf: stateURL), let s = try? JSONDecoder().decode(CoordinatorState.self, from: d) else { return false }
            return s.leases.values.contains { ($0.returnedConsumed ?? 0) > $0.committedOffset }
        }
        // Killed only two or three steps past a checkpoint: the next checkpoint's commit would
        // retire the returned leases (everything read before it is then committed), and the step
        // log runs ahead of a commit still on its way. If the case appears too close to the next
        // checkpoint, the wait goes on into the next window.
        func awayFromNextCommit() -> Bool {
            guard let s = try? loggedSteps(dir).last else { return false }
            return s >= 16 && (2...(every - 2)).contains(s % every)
        }
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline && train.isRunning
                && !(log().contains("epoch 0 step 16 |") && awayFromNextCommit() && returnedAfterCheckpoint()) { usleep(5_000) }
        XCTAssertTrue(log().contains("epoch 0 step 16 |"), log())
        XCTAssertTrue(train.isRunning, "the job ended before the kill\n\(log())")
        let rankPids = killJob(train)
        XCTAssertEqual(rankPids.count, ranks, "mpirun's rank processes: \(rankPids)")
        XCTAssertEqual(coord.isRunning, true, "the coordinator keeps running")
        let killedAt = try XCTUnwrap(try loggedSteps(dir).last)
        // What the coordinator holds when the ranks are gone (its snapshot is durable before replies).
        usleep(300_000)
        let beforeRelaunch = try JSONDecoder().decode(CoordinatorState.self, from: Data(contentsOf: stateURL))
        let resumedFrom = Int(try XCTUnwrap(beforeRelaunch.checkpoints.last?.step, "no checkpoint committed before the kill"))
        XCTAssertGreaterThanOrEqual(resumedFrom, 15)
        XCTAssertGreaterThan(killedAt, resumedFrom, "the ranks ran steps after the last committed checkpoint")
        XCTAssertEqual(beforeRelaunch.ranks.values.map(\.health), [.alive, .alive])
        XCTAssertTrue(beforeRelaunch.leases.values.contains { ($0.returnedConsumed ?? 0) > $0.committedOffset },
                      "the dead ranks returned leases they read after the checkpoint (the case under test): \(beforeRelaunch.leases.values)")
        if afterTimeout {
            let failDeadline = Date().addingTimeInterval(30)
            while Date() < failDeadline, try status(endpoint)["job_state"] as? String != "failed" { usleep(200_000) }
            XCTAssertEqual(try status(endpoint)["job_state"] as? String, "failed", "the heartbeat timeout did not fail the job")
        } else {
            XCTAssertEqual(try status(endpoint)["job_state"] as? String, "running", "the relaunch comes before the heartbeat timeout")
        }

        if uncommittedCheckpoint {
            // Checkpoint C+5 as the dead ranks would have left it (its state says step C+5; the
            // tensors are C's, which does not matter here): complete on disk, never committed.
            let ck = dir.appendingPathComponent("run/checkpoints")
            let name = String(format: "step_%08d", resumedFrom + every)
            try? FileManager.default.removeItem(at: ck.appendingPathComponent(name))
            try FileManager.default.copyItem(at: ck.appendingPathComponent(String(format: "step_%08d", resumedFrom)), to: ck.appendingPathComponent(name))
            let stateFile = ck.appendingPathComponent(name + "/state.json")
            var st = try JSONDecoder().decode(CheckpointState.self, from: Data(contentsOf: stateFile))
            st.step = resumedFrom + every
            try JSONEncoder().encode(st).write(to: stateFile)
            try Data((name + "\n").utf8).write(to: ck.appendingPathComponent("latest"))
            XCTAssertEqual(Checkpointer.latest(dir.path + "/run")?.lastPathComponent, name)
        }

        // (Without the fabricated one, the dead ranks may rarely have written C+5 themselves.)
        let passOver = Checkpointer.latest(dir.path + "/run")?.lastPathComponent != String(format: "step_%08d", resumedFrom)

        // Relaunch with --resume against the same coordinator.
        let (again, againLog) = try startTraining(dir: dir, cfg: cfg, endpoint: endpoint, extra: flags + ["--resume"], log: "train2.log")
        defer { if again.isRunning { _ = killJob(again) } }
        let log2 = { (try? String(contentsOf: againLog, encoding: .utf8)) ?? "" }
        let end = Date().addingTimeInterval(240)
        while again.isRunning && Date() < end { usleep(100_000) }
        XCTAssertFalse(again.isRunning, "the relaunched job did not finish\n\(log2())")
        XCTAssertEqual(again.terminationStatus, 0, log2())
        let text = log() + "\n--- relaunch ---\n" + log2()
        XCTAssertTrue(log2().contains(String(format: "resumed from %@/run/checkpoints/step_%08d: step %d", dir.path, resumedFrom, resumedFrom)), text)
        XCTAssertFalse(log2().contains("did not acknowledge"), text)
        XCTAssertEqual(log2().contains("resume: passing over"), passOver, text)
        let final = try JSONDecoder().decode(CoordinatorState.self, from: Data(contentsOf: stateURL))
        XCTAssertEqual(final.attempt, beforeRelaunch.attempt + 1, "the relaunch restarted the job once")
        try assertExactAccounting(dir: dir, steps: steps, every: every, ranks: ranks, batch: batch, beforeKill: nil, final: final,
                                  context: text, relaunch: (killedAt, resumedFrom))
        // No lease of the dead processes was read after the relaunch, or is still live: all that
        // they had not committed was revoked and re-issued under new lease ids.
        let deadLeases = beforeRelaunch.nextLeaseId
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.path + "/run/checkpoints").filter({ $0.hasPrefix("step_") }) {
            let st = try JSONDecoder().decode(CheckpointState.self, from: Data(contentsOf: dir.appendingPathComponent("run/checkpoints/\(name)/state.json")))
            guard st.step > resumedFrom else { continue }
            for r in st.ranks {
                for u in r.leases?.consumed ?? [] {
                    XCTAssertGreaterThanOrEqual(u.leaseId, deadLeases, "checkpoint \(st.step): rank \(r.rank) read lease \(u.leaseId) of the dead attempt")
                }
            }
        }
        XCTAssertTrue(final.leases.keys.allSatisfy { $0 >= deadLeases }, "leases of the dead attempt still live: \(final.leases.keys.sorted())")
        // The coordinator serves the relaunched job: both ranks (new processes), the last checkpoint.
        let st = try status(endpoint)
        XCTAssertEqual((st["ranks"] as? [[String: Any]])?.count, 2, "\(st)")
        XCTAssertEqual(Set(final.ranks.values.map(\.pid)).intersection(rankPids.map { UInt32($0) }), [], "the dead processes are not ranks")
        XCTAssertEqual((st["last_checkpoint"] as? [String: Any])?["step"] as? Int, steps, "\(st)")
        XCTAssertEqual(st["samples"] as? Int, steps * ranks * batch, "samples trained, as rank 0 reports them")
    }

    func testRanksKilledAndRelaunchedWithResumeBeforeHeartbeatTimeout() throws {
        try runRanksKilledAndRelaunched(afterTimeout: false)
    }

    func testRanksKilledAndRelaunchedWithResumeAfterHeartbeatTimeout() throws {
        try runRanksKilledAndRelaunched(afterTimeout: true)
    }

    func testRanksKilledBeforeCommittingTheirCheckpointResumeFromTheCommittedOne() throws {
        try runRanksKilledAndRelaunched(afterTimeout: false, uncommittedCheckpoint: true)
    }
}
