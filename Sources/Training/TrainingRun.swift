import ALBEF
import Distributed
import Foundation
import Tensor

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
    /// `--record-samples`: rank 0 writes every step's samples to this JSON-lines file.
    public var recordSamples: String? = nil
    public init() {}
}

/// Control hooks between steps (the coordinator plugs in here): return a command for this
/// step boundary. Only rank 0's answer counts; it is agreed in one allreduce so every rank acts at the same step.
public enum StepCommand: UInt8, Sendable {
    case none = 0, stop = 1, checkpoint = 2, pause = 3, resume = 4
}

/// The pretraining run loop (`albef-worker train`).
public typealias TrainingRun = ModelTrainingRun<ALBEFPretrain>

/// The training loop of one rank: epochs × iterations from a `BatchSource`, logging on rank 0
/// (stdout + `metrics.jsonl`), atomic checkpoints, divergence checks, resume. The same loop runs
/// pretraining (`ALBEFPretrain`) and retrieval fine-tuning (`ALBEFRetrieval`).
public final class ModelTrainingRun<Model: TrainableALBEF> {
    public let trainer: ModelTrainer<Model>
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
    /// `--record-samples`: rank 0 writes the samples of every optimizer step here.
    public private(set) var sampleRecord: SampleRecord?
    /// Names a sample number in the record (the loader's `shard#index`).
    public var sampleName: ((Int64) -> String)?
    /// With `evalEvery` > 0: called on every rank (a collective: the evaluation is rank-sliced)
    /// after the checkpoint of every `evalEvery`-th epoch end, with the number of epochs done;
    /// returns named values (e.g. `test/txt_r1`), which rank 0 logs (stdout, `metrics.jsonl` as
    /// `{"eval": {...}}`, TensorBoard tags `eval/<name>`).
    public var evaluate: ((Int) throws -> [(String, Double)])?
    /// Evaluate after every N-th epoch (0: never); `eval_every` / `--eval-every`.
    public var evalEvery = 0
    /// The evaluations of this run: (epochs done, step, values).
    public private(set) var evaluations: [(epoch: Int, step: Int, values: [(String, Double)])] = []
    /// The checkpoint this run resumed from, if any.
    public private(set) var resumedFrom: CheckpointState?

    public init(trainer: ModelTrainer<Model>, source: BatchSource, options: RunOptions) {
        self.trainer = trainer
        self.source = source
        self.options = options
    }

    var rank0: Bool { trainer.comm.rank == 0 }
    /// Epochs finished (stored in checkpoints and committed to the coordinator).
    public private(set) var epochsDone = 0
    /// True once the last epoch ended (the job is finished; its final checkpoint is written).
    public private(set) var finished = false
    /// Step of the newest checkpoint written or resumed from (nil: none).
    var checkpointedStep: Int?

    /// What the ranks agreed at a step boundary (see ``agree(hasBatch:)``).
    public struct Boundary: Equatable, Sendable {
        /// Rank 0's command for this boundary.
        public var command: StepCommand
        /// The signal that stops the run (rank 0's own, -1 when only other ranks got one), or 0.
        public var signal: Int32
        /// Some rank has no next batch: the epoch's data ended for everyone.
        public var endOfData: Bool
        public init(command: StepCommand, signal: Int32, endOfData: Bool) {
            self.command = command
            self.signal = signal
            self.endOfData = endOfData
        }

        /// The decision from the per-step allreduce's sums [rank 0's command, ranks signalled,
        /// rank 0's signal number, ranks without a next batch] and this rank's own signal.
        public static func decide(_ sums: [Float], localSignal: Int32) -> Boundary {
            var command = StepCommand(rawValue: UInt8(max(0, min(255, sums[0])))) ?? .none
            var signal: Int32 = 0
            if sums[1] > 0 {
                signal = sums[2] > 0 ? Int32(sums[2]) : (localSignal != 0 ? localSignal : -1)
                command = .stop
            }
            return Boundary(command: command, signal: signal, endOfData: sums[3] > 0)
        }
    }

    /// Runs until `maxSteps`, `maxSeconds`, the configured epochs, or a stop command.
    ///
    /// Each turn of the loop is one boundary then one step: the next batch is read first, then
    /// one allreduce agrees on rank 0's command, the signals and whether every rank has a batch
    /// (``agree(hasBatch:)``). When one has none the epoch ends for all at this boundary, with a
    /// checkpoint (ALBEF saves one per epoch); after the last epoch that is the final checkpoint.
    /// A stop (command, signal, `--max-steps`, `--max-seconds`) checkpoints and leaves. So no rank
    /// ever waits in a collective another rank will not enter.
    public func run() throws {
        var (epoch, iteration) = try resumeIfAsked()
        let log = try RunLog(run: self)
        defer { log.close() }
        if let path = options.recordSamples {
            sampleRecord = try SampleRecord(path: path, rank: trainer.comm.rank, resumedStep: resumedFrom?.step ?? 0,
                                            name: sampleName ?? { String($0) })
        }
        defer { sampleRecord?.close() }
        let epochs = trainer.config.epochs
        if let mx = options.maxSteps, trainer.globalStep >= mx {
            // A resumed (e.g. requeued) run that already reached --max-steps trains nothing more.
            if rank0 { print("already at step \(trainer.globalStep) (--max-steps \(mx)): nothing to train") }
            return
        }
        if epoch >= epochs {
            finished = true
            if rank0 { print("already finished: \(epochsDone) of \(epochs) epochs done at step \(trainer.globalStep)") }
            return
        }
        outer: while epoch < epochs {
            try source.start(epoch: epoch, iteration: iteration)
            while true {
                // The step's micro-batches (one per micro-step), read before the boundary.
                var micro: [PretrainBatch] = []
                while micro.count < trainer.layout.accumSteps, let m = try source.next() { micro.append(m) }
                let complete = micro.count == trainer.layout.accumSteps
                let b = try agree(hasBatch: complete)
                if b.endOfData {
                    // The epoch's end, agreed: its checkpoint stores the start of the next epoch.
                    epochsDone = epoch + 1
                    finished = epochsDone >= epochs
                    try checkpoint(epoch: epoch + 1, iteration: 0)
                    if evalEvery > 0, epochsDone % evalEvery == 0, let evaluate {
                        let values = try evaluate(epochsDone)
                        evaluations.append((epochsDone, trainer.globalStep, values))
                        log.recordEval(values, epochsDone: epochsDone, step: trainer.globalStep)
                    }
                    if b.command == .stop && !finished { noteStop(b); break outer }
                    break
                }
                let stepsDone = options.maxSteps.map { trainer.globalStep >= $0 } ?? false
                if b.command == .stop || stepsDone {
                    if checkpointedStep != trainer.globalStep { try checkpoint(epoch: epoch, iteration: iteration) }
                    noteStop(b)
                    break outer
                }
                let periodic = options.checkpointEvery > 0 && trainer.globalStep > 0 && trainer.globalStep % options.checkpointEvery == 0
                if (periodic || b.command == .checkpoint) && checkpointedStep != trainer.globalStep {
                    try checkpoint(epoch: epoch, iteration: iteration)
                }
                guard complete else { throw TrainingError.data("rank \(trainer.comm.rank): no batch after the ranks agreed every rank had one") }
                let m = try trainStep(micro, epoch: epoch, iteration: iteration)
                iteration += 1
                log.record(m, epoch: epoch, iteration: iteration)
            }
            epoch += 1
            iteration = 0
        }
    }

    /// Loads the checkpoint `--resume` names (if any) and returns the (epoch, iteration) to start at.
    func resumeIfAsked() throws -> (Int, Int) {
        guard options.resume else { return (0, 0) }
        guard let dir = try resumeDirectory() else {
            if rank0 { print("resume: no checkpoint under \(Checkpointer.directory(options.outputDir).path); starting fresh") }
            return (0, 0)
        }
        let st = try Checkpointer.readState(dir)
        try st.checkCompatible(with: trainer.config, path: dir.path) { if self.rank0 { print($0) } }
        if let global = st.layout?.globalBatch, global != trainer.layout.globalBatch {
            throw TrainingError.checkpoint("\(dir.path) was trained with the global batch \(global) (\(st.layout!)); this run's is \(trainer.layout.globalBatch) (\(trainer.layout)). World sizes that continue it: \(st.layout!.worldSizesThatWork().map(String.init).joined(separator: ", "))")
        }
        try source.resume(from: st, rank: trainer.comm.rank, layout: trainer.layout)
        _ = try Checkpointer.load(dir, into: trainer)
        epochsDone = st.epoch
        checkpointedStep = st.step
        resumedFrom = st
        if rank0 {
            let change = st.worldSize == trainer.comm.size ? "" : "; world size \(st.worldSize) → \(trainer.comm.size) (\(trainer.layout))"
            print("resumed from \(dir.path): step \(st.step), epoch \(st.epoch), iteration \(st.iteration)\(change)")
        }
        return (st.epoch, st.iteration)
    }

    /// The boundary collective: one allreduce of [rank 0's command, signalled, rank 0's signal,
    /// has no next batch]. Rank 0 polls its command source here (and waits here while paused).
    func agree(hasBatch: Bool) throws -> Boundary {
        var cmd: UInt8 = rank0 ? (commandSource?() ?? .none).rawValue : 0
        if cmd == StepCommand.pause.rawValue {
            // Paused: rank 0 waits for resume (or stop); the other ranks wait in the allreduce.
            print("paused at step \(trainer.globalStep); waiting for resume")
            cmd = StepCommand.none.rawValue
            while true {
                usleep(200_000)
                if (stopSignal?() ?? 0) != 0 { break }  // agreed on below
                let c = commandSource?() ?? .none
                if c == .resume { print("resumed at step \(trainer.globalStep)"); break }
                if c == .stop { cmd = StepCommand.stop.rawValue; break }
                if c == .checkpoint { cmd = StepCommand.checkpoint.rawValue; break }
            }
        }
        if let ms = options.maxSeconds, rank0, monotonicSeconds() - started >= ms { cmd = StepCommand.stop.rawValue }
        let signal = stopSignal?() ?? 0
        var sums: [Float] = [rank0 ? Float(cmd) : 0, signal != 0 ? 1 : 0, rank0 ? Float(signal) : 0, hasBatch ? 0 : 1]
        sums.withUnsafeMutableBufferPointer { trainer.comm.allReduceSum($0.baseAddress!, count: 4) }
        return Boundary.decide(sums, localSignal: signal)
    }

    /// One ALBEF step on this rank's micro-batches, then the per-step bookkeeping (history,
    /// hooks, the sample record, divergence check).
    func trainStep(_ micro: [PretrainBatch], epoch: Int, iteration: Int) throws -> StepMetrics {
        let m = try trainer.step(micro, epoch: epoch, iteration: iteration, iterationsPerEpoch: source.iterationsPerEpoch)
        source.markTrained()
        if !recoveryReported { recoveryReported = true; reportRecovery() }
        try sampleRecord?.record(step: trainer.globalStep, epoch: epoch, micro: micro, layout: trainer.layout, comm: trainer.comm)
        history.append(m)
        onStep?(m)
        let step = trainer.globalStep
        if options.divergenceCheckEvery > 0, step % options.divergenceCheckEvery == 0 { try trainer.checkDivergence() }
        return m
    }

    var recoveryReported = false

    /// After an automatic restart (`cluster/albef-launch`, `pretrain.sbatch`: ALBEF_RESTART_COUNT
    /// > 0), rank 0 logs the recovery at the first step: the restart, its reason, the step and
    /// world size it resumed at, and the time from the failure to this first new step.
    func reportRecovery() {
        let env = ProcessInfo.processInfo.environment
        guard rank0, let n = env["ALBEF_RESTART_COUNT"].flatMap(Int.init), n > 0 else { return }
        let failed = env["ALBEF_FAILURE_TIME"].flatMap(Double.init)
        let elapsed = failed.map { String(format: "%.1f s", Date().timeIntervalSince1970 - $0) } ?? "unknown"
        let was = resumedFrom.map { " (the checkpoint at step \($0.step) had \($0.worldSize))" } ?? " (no checkpoint: from the start)"
        print("recovery: restart \(n) after \(env["ALBEF_RESTART_REASON"] ?? "a failure"); resumed at step \(resumedFrom?.step ?? 0) with \(trainer.comm.size) rank(s)\(was); first new step \(trainer.globalStep) done \(elapsed) after the failure")
    }

    /// Records why the run stops (command or signal) at a boundary that stops it.
    func noteStop(_ b: Boundary) {
        if b.signal != 0 { stoppedBySignal = b.signal }
        if b.command == .stop && b.signal == 0 { stoppedByCommand = options.maxSteps.map { trainer.globalStep < $0 } ?? true }
    }

    /// When the run started (monotonic seconds), for `--max-seconds`.
    let started = monotonicSeconds()

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

    /// Writes a checkpoint of the state after the last trained step; (epoch, iteration) is where
    /// a resumed run continues (an epoch-end checkpoint stores the next epoch's start).
    func checkpoint(epoch: Int, iteration: Int) throws {
        let url = try Checkpointer.save(trainer: trainer, output: options.outputDir, epoch: epoch, iteration: iteration,
                                        dataPosition: source.position(), leases: checkpointLeases?())
        checkpointedStep = trainer.globalStep
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
