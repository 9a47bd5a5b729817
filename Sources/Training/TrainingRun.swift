import ALBEF
import Distributed
import Foundation

/// Options of a training run (the `albef-worker train` flags).
public struct RunOptions: Sendable {
    public var outputDir = "runs/albef"
    public var maxSteps: Int? = nil
    public var maxSeconds: Double? = nil
    public var logEvery = 10
    public var checkpointEvery = 0
    /// Keep only the newest N checkpoints (0: keep all); see ``Checkpointer/prune(output:keep:protectFrom:)``.
    public var keepCheckpoints = 0
    public var divergenceCheckEvery = 50
    public var resume = false
    /// Also write the logged scalars as TensorBoard events under `outputDir/tensorboard`.
    public var tensorBoard = true
    /// With `resume`: the step of the checkpoint to resume from (with a coordinator, the last one
    /// it committed); nil: the latest checkpoint.
    public var resumeStep: Int? = nil
    public init() {}
}

/// Control hooks between steps (the coordinator plugs in here): return a command for this
/// step boundary. Only rank 0's answer counts; it is agreed in one allreduce so every rank acts at the same step.
public enum StepCommand: UInt8, Sendable {
    case none = 0, stop = 1, checkpoint = 2, pause = 3, resume = 4
}

/// The training loop of one rank: epochs × iterations from a `BatchSource`, logging on rank 0
/// (stdout + `metrics.jsonl`), atomic checkpoints, divergence checks, resume.
public final class TrainingRun {
    public let trainer: Trainer
    public let source: BatchSource
    public let options: RunOptions
    /// Called on rank 0 at every step boundary.
    public var commandSource: (() -> StepCommand)?
    /// Called on every rank after each step with its metrics (progress reports).
    public var onStep: ((StepMetrics) -> Void)?
    /// Called on every rank after a checkpoint is committed.
    public var onCheckpoint: ((URL, Int) -> Void)?
    /// Called on every rank just before a checkpoint is written: the rank's lease account to store in it.
    public var checkpointLeases: (() -> LeaseAccount?)?
    /// With `keepCheckpoints`, on rank 0: checkpoints at or after the returned step are never
    /// deleted (the coordinator link returns the newest step the coordinator's ledger holds; nil
    /// while it holds none, which protects every checkpoint). Without the hook only `latest` and
    /// the newest `keepCheckpoints` are kept.
    public var checkpointsProtectedFrom: (() -> Int?)?
    public private(set) var history: [StepMetrics] = []
    public private(set) var lastCheckpoint: URL?
    public private(set) var stoppedByCommand = false
    /// Polled on every rank at each step boundary: a signal number when this process was asked to
    /// stop (SIGUSR1 from a scheduler's time-limit warning, SIGTERM, SIGINT), else 0. If any rank
    /// was, every rank checkpoints at this boundary and the run ends (`stoppedBySignal`).
    public var stopSignal: (() -> Int32)?
    /// The signal that ended the run early (after its checkpoint), or 0.
    public private(set) var stoppedBySignal: Int32 = 0

    public init(trainer: Trainer, source: BatchSource, options: RunOptions) {
        self.trainer = trainer
        self.source = source
        self.options = options
    }

    var rank0: Bool { trainer.comm.rank == 0 }

    /// Runs until `maxSteps`, `maxSeconds`, the configured epochs, or a stop command.
    public func run() throws {
        let comm = trainer.comm
        var epoch = 0, iteration = 0
        if options.resume, let dir = try resumeDirectory() {
            let st = try Checkpointer.load(dir, into: trainer)
            epoch = st.epoch
            iteration = st.iteration
            if st.worldSize == trainer.comm.size, let mine = st.ranks.first(where: { $0.rank == trainer.comm.rank }) {
                try source.restore(position: mine.dataPosition)
            }
            if rank0 { print("resumed from \(dir.path): step \(st.step), epoch \(epoch), iteration \(iteration)") }
        } else if options.resume, rank0 {
            print("resume: no checkpoint under \(Checkpointer.directory(options.outputDir).path); starting fresh")
        }
        try FileManager.default.createDirectory(atPath: options.outputDir, withIntermediateDirectories: true)
        let metricsURL = URL(fileURLWithPath: options.outputDir).appendingPathComponent("metrics.jsonl")
        let metrics: FileHandle? = rank0 ? try openAppend(metricsURL) : nil
        // TensorBoard: a new event file per run (a resumed run adds one; TensorBoard merges them).
        let board: TensorBoardWriter? = rank0 && options.tensorBoard ? try TensorBoardWriter(directory: options.outputDir + "/tensorboard") : nil
        let start = monotonicSeconds()
        let startStep = trainer.globalStep
        var windowStart = start, windowSamples = 0
        let globalBatch = trainer.config.batchSize * comm.size
        let totalSteps = options.maxSteps ?? (trainer.config.epochs * source.iterationsPerEpoch)
        if let mx = options.maxSteps, trainer.globalStep >= mx {
            // A resumed (e.g. requeued) run that already reached --max-steps trains nothing more.
            if rank0 { print("already at step \(trainer.globalStep) (--max-steps \(mx)): nothing to train") }
            try? metrics?.close()
            return
        }
        outer: while epoch < trainer.config.epochs {
            try source.start(epoch: epoch, iteration: iteration)
            while let batch = try source.next() {
                let m = try trainer.step(batch, epoch: epoch, iteration: iteration, iterationsPerEpoch: source.iterationsPerEpoch)
                iteration += 1
                history.append(m)
                onStep?(m)
                windowSamples += globalBatch
                let step = trainer.globalStep
                if options.divergenceCheckEvery > 0, step % options.divergenceCheckEvery == 0 { try trainer.checkDivergence() }
                if rank0, options.logEvery > 0, step % options.logEvery == 0 || step == startStep + 1 {
                    let now = monotonicSeconds()
                    let sps = Double(windowSamples) / max(now - windowStart, 1e-9)
                    let done = step - startStep
                    var eta = Double(totalSteps - step) * (now - start) / Double(max(done, 1))
                    if let ms = options.maxSeconds { eta = min(eta, max(0, ms - (now - start))) }
                    print(String(format: "epoch %d step %d | loss_ita %.4f | loss_itm %.4f | loss_mlm %.4f | lr %.2e | %.1f samples/s | ETA %@",
                                 epoch, step, m.lossITA, m.lossITM, m.lossMLM, m.lr, sps, formatDuration(eta)))
                    // Every logged scalar once: its metrics.jsonl key, its TensorBoard tag, its value.
                    let scalars: [(key: String, tag: String, value: Double)] = [
                        ("loss", "loss/total", m.loss), ("loss_ita", "loss/ita", m.lossITA), ("loss_itm", "loss/itm", m.lossITM),
                        ("loss_mlm", "loss/mlm", m.lossMLM), ("lr", "lr", m.lr), ("alpha", "alpha", m.alpha), ("temp", "temp", m.temp),
                        ("samples_per_s", "throughput/samples_per_s", sps), ("step_s", "time/step_s", m.stepSeconds),
                        ("forward_s", "time/forward_s", m.forwardSeconds), ("backward_s", "time/backward_s", m.backwardSeconds),
                        ("comm_wait_s", "time/comm_wait_s", m.commWaitSeconds), ("optimizer_s", "time/optimizer_s", m.optimizerSeconds)]
                    var obj: [String: Any] = ["step": step, "epoch": epoch, "iteration": iteration, "elapsed_s": now - start]
                    for s in scalars { obj[s.key] = s.value }
                    let bad = source.badSampleCounts
                    if !bad.isEmpty { obj["bad_samples"] = bad }
                    if let d = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]) {
                        metrics?.write(d + Data("\n".utf8))
                    }
                    board?.add(scalars: scalars.map { ($0.tag, $0.value) }, step: step)
                    windowStart = now
                    windowSamples = 0
                }
                // Step-boundary commands from rank 0, agreed by every rank.
                var cmd: UInt8 = rank0 ? (commandSource?() ?? .none).rawValue : 0
                if cmd == StepCommand.pause.rawValue {
                    // Paused: rank 0 waits for resume (or stop); the other ranks wait in the broadcast.
                    print("paused at step \(step); waiting for resume")
                    cmd = StepCommand.none.rawValue
                    while true {
                        usleep(200_000)
                        if (stopSignal?() ?? 0) != 0 { break }  // agreed on below
                        let c = commandSource?() ?? .none
                        if c == .resume { print("resumed at step \(step)"); break }
                        if c == .stop { cmd = StepCommand.stop.rawValue; break }
                        if c == .checkpoint { cmd = StepCommand.checkpoint.rawValue; break }
                    }
                }
                if let ms = options.maxSeconds, rank0, monotonicSeconds() - start >= ms { cmd = StepCommand.stop.rawValue }
                if let mx = options.maxSteps, step >= mx { cmd = StepCommand.stop.rawValue }
                // One allreduce agrees on rank 0's command and on whether any rank was signalled
                // (sums: [rank 0's command, ranks signalled, rank 0's signal number]).
                let signal = stopSignal?() ?? 0
                var agreed: [Float] = [rank0 ? Float(cmd) : 0, signal != 0 ? 1 : 0, rank0 ? Float(signal) : 0]
                agreed.withUnsafeMutableBufferPointer { comm.allReduceSum($0.baseAddress!, count: 3) }
                cmd = UInt8(agreed[0])
                if agreed[1] > 0 {
                    // Rank 0 names its own signal; -1 when only other ranks received one.
                    stoppedBySignal = agreed[2] > 0 ? Int32(agreed[2]) : (signal != 0 ? signal : -1)
                    cmd = StepCommand.stop.rawValue
                }
                let command = StepCommand(rawValue: cmd) ?? .none
                let periodic = options.checkpointEvery > 0 && step % options.checkpointEvery == 0
                if periodic || command == .checkpoint || command == .stop {
                    try checkpoint(epoch: epoch, iteration: iteration)
                }
                if command == .stop { stoppedByCommand = options.maxSteps.map { step < $0 } ?? true; break outer }
            }
            epoch += 1
            iteration = 0
        }
        try? metrics?.close()
    }

    /// The checkpoint `--resume` continues from: the one of `options.resumeStep` when set (it must
    /// exist; a newer one on disk is passed over, with a note), else the latest one, if any.
    func resumeDirectory() throws -> URL? {
        let latest = Checkpointer.latest(options.outputDir)
        guard let step = options.resumeStep else { return latest }
        let dir = Checkpointer.directory(options.outputDir).appendingPathComponent(String(format: "step_%08d", step))
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("state.json").path) else {
            throw TrainingError.checkpoint("the job resumes from its committed checkpoint at step \(step), but \(dir.path) does not exist (latest here: \(latest?.lastPathComponent ?? "none")); resume with the --output-dir that wrote it")
        }
        if rank0, let latest, latest.standardizedFileURL != dir.standardizedFileURL {
            print("resume: passing over \(latest.path), which the coordinator never committed; resuming from its last committed checkpoint \(dir.path)")
        }
        return dir
    }

    func checkpoint(epoch: Int, iteration: Int) throws {
        // A finished epoch is stored as the start of the next one.
        let done = iteration >= source.iterationsPerEpoch
        let url = try Checkpointer.save(trainer: trainer, output: options.outputDir, epoch: done ? epoch + 1 : epoch,
                                        iteration: done ? 0 : iteration, dataPosition: source.position(),
                                        leases: checkpointLeases?())
        lastCheckpoint = url
        onCheckpoint?(url, trainer.globalStep)
        if rank0 { print("checkpoint \(url.path)") }
        if rank0 && options.keepCheckpoints > 0 {
            // With a coordinator, nothing at or after the newest step its ledger holds is deleted
            // (nothing at all before it has acknowledged one: protect from step 0).
            let protectFrom = checkpointsProtectedFrom.map { $0() ?? 0 }
            let gone = Checkpointer.prune(output: options.outputDir, keep: options.keepCheckpoints, protectFrom: protectFrom)
            if !gone.isEmpty { print("checkpoints: removed \(gone.joined(separator: ", ")) (--keep-checkpoints \(options.keepCheckpoints))") }
        }
    }
}

func openAppend(_ url: URL) throws -> FileHandle {
    if !FileManager.default.fileExists(atPath: url.path) { FileManager.default.createFile(atPath: url.path, contents: nil) }
    let h = try FileHandle(forWritingTo: url)
    h.seekToEndOfFile()
    return h
}

/// "1h02m", "3m05s", "12s".
public func formatDuration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) }
    if t >= 60 { return String(format: "%dm%02ds", t / 60, t % 60) }
    return "\(t)s"
}
