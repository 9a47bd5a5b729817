import ALBEF
import ArgumentParser
import Control
import DataPipeline
import Distributed
import Foundation
import Tensor
import Training

/// The first stop signal `train` received (SIGUSR1, SIGTERM, SIGINT), or 0; polled at step boundaries.
nonisolated(unsafe) var trainStopSignal: Int32 = 0

/// Exit status of a run that a signal stopped after writing its checkpoint (EX_TEMPFAIL: not
/// finished, run again with --resume).
let exitStoppedBySignal: Int32 = 75

/// Graceful stop on a signal: the first SIGUSR1 / SIGTERM / SIGINT asks for a checkpoint and a
/// clean exit at the next step boundary; the handler then returns to the default action, so a
/// second signal ends the process at once. (mpirun forwards SIGUSR1 to every rank but kills the
/// job soon after a SIGTERM; srun forwards both; Slurm's `--signal=USR1@T` warns before the limit.)
func installStopSignalHandlers() {
    for s in [SIGUSR1, SIGTERM, SIGINT] {
        signal(s) { received in
            if trainStopSignal == 0 { trainStopSignal = received }
            signal(received, SIG_DFL)
        }
    }
}

/// Options shared by the commands that build a model from a config.
struct ModelOptions: ParsableArguments {
    @Option(help: "ALBEF YAML config (Pretrain.yaml keys).") var config: String = "configs/tiny.yaml"
    @Option(help: "Threads per rank for BLAS and kernels (threads × ranks per host = cores).") var threads: Int = 1
    @Option(help: "Random seed (model init on rank 0, data order, masks, negatives).") var seed: UInt64 = 42

    func validate() throws {
        guard FileManager.default.fileExists(atPath: config) else { throw ValidationError("--config \(config): file not found (see configs/)") }
        guard threads >= 1 else { throw ValidationError("--threads must be ≥ 1") }
    }
}

/// `albef-worker train`: one data-parallel rank (run under `mpirun -n N`).
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train ALBEF; run one process per rank under mpirun (or alone for one rank).")

    @OptionGroup var options: TrainRunOptions

    func run() throws { try options.train(ALBEFPretrain.self) }
}

/// The flags of a training run (`train`, `finetune-retrieval`) and the run itself: the same
/// data parallelism, coordinator, checkpoints, resume, signals and logs for every objective.
struct TrainRunOptions: ParsableArguments {
    @OptionGroup var model: ModelOptions
    @Option(help: "Where checkpoints, metrics.jsonl and logs go.") var outputDir: String = "runs/albef"
    @Option(help: "Corpus: a corpus index (albef-data index), shards (data/{00000..00009}.tar) or ALBEF JSON list(s), comma-separated; default: the config's train_file.")
    var corpus: String?
    @Option(help: "Stop after this many global steps.") var maxSteps: Int?
    @Option(help: "Stop (with a checkpoint) after this many seconds.") var maxSeconds: Double?
    @Option(help: "Log every N steps (rank 0).") var logEvery: Int = 10
    @Option(help: "Checkpoint every N steps (0: only at the end).") var checkpointEvery: Int = 0
    @Option(help: "Keep only the newest N checkpoints (0: keep all). With --coordinator, the newest checkpoint the coordinator's ledger holds is kept too.")
    var keepCheckpoints: Int = 0
    @Flag(inversion: .prefixedNo, help: "Also write the logged scalars as TensorBoard events under OUTPUT-DIR/tensorboard.")
    var tensorboard = true
    @Option(help: "Check that ranks hold identical weights every N steps (0: never).") var divergenceCheckEvery: Int = 50
    @Flag(help: "Resume from the latest checkpoint in --output-dir.") var resume = false
    @Option(help: "Coordinator endpoint (tcp://host:port) for leases, status and commands; default: static sharding.") var coordinator: String?
    @Option(help: "Job id the coordinator was started with (albef-coord serve --job-id).") var jobId: String = "albef"
    @Option(help: "Job token (albef-coord serve --token); default: $ALBEF_JOB_TOKEN.") var token: String?
    @Option(name: .customLong("curve-keys"), help: "Directory of CURVE keys from `albef-coord keygen` (server.pub, client.pub, client.key).") var curveKeys: String?
    @Option(help: "Override the config's batch_size (per rank and micro-step).") var batchSize: Int?
    @Option(help: "Override the config's accum_steps (micro-steps per optimizer step; global batch = batch_size × ranks × accum_steps).")
    var accumSteps: Int?
    @Option(help: "Rank 0 writes, per optimizer step, the epoch and the samples of the global batch to this JSON-lines file (the audit trail: no sample twice in an epoch).")
    var recordSamples: String?
    @Option(help: "Override the config's epochs.") var epochs: Int?
    @Option(help: "Evaluate retrieval after every N-th epoch (rank-sliced; recalls to stdout, OUTPUT-DIR/eval.jsonl and TensorBoard). Default: the config's eval_every (0: never).")
    var evalEvery: Int?
    @Option(help: "re_eval_dataset JSON(s) evaluated by --eval-every, comma-separated (default: the config's val_file and test_file).")
    var evalFile: String?
    @Option(help: "Override the learning rate (optimizer.lr and the schedule's base).") var lr: Double?
    @Option(help: "Use synthetic random batches with this many iterations per epoch (no corpus; for smoke tests).") var synthetic: Int?
    @Option(help: "Data loader threads per rank.") var loaderThreads: Int = 1
    @Option(help: "GEMM precision, fp32 or bf16 (bf16: linear layers and attention matmuls on bf16 operands with fp32 accumulation; falls back to fp32 with a warning on a CPU without bf16). Default: the config's precision (fp32).")
    var precision: Precision?

    func validate() throws {
        if let m = maxSteps, m < 1 { throw ValidationError("--max-steps must be ≥ 1") }
        if let a = accumSteps, a < 1 { throw ValidationError("--accum-steps must be ≥ 1, got \(a)") }
        if let b = batchSize, b < 2 { throw ValidationError("--batch-size must be ≥ 2 (ITM draws each sample's negative from another sample of the batch), got \(b)") }
        if let e = epochs, e < 1 { throw ValidationError("--epochs must be ≥ 1, got \(e)") }
        if let v = lr, !(v > 0 && v.isFinite) { throw ValidationError("--lr must be > 0, got \(v)") }
        if let n = synthetic, n < 1 { throw ValidationError("--synthetic must be ≥ 1 iterations per epoch, got \(n)") }
        if loaderThreads < 1 { throw ValidationError("--loader-threads must be ≥ 1") }
        if let s = maxSeconds, !(s > 0) { throw ValidationError("--max-seconds must be > 0") }
        if let e = evalEvery, e < 0 { throw ValidationError("--eval-every must be ≥ 0 (epochs between evaluations), got \(e)") }
        if logEvery < 0 || checkpointEvery < 0 || keepCheckpoints < 0 {
            throw ValidationError("--log-every / --checkpoint-every / --keep-checkpoints must be ≥ 0")
        }
    }

    /// Runs this rank. `configure` adapts the loaded config to the objective (before the
    /// command-line overrides).
    func train<Model: TrainableALBEF>(_: Model.Type, configure: (inout TrainConfig) throws -> Void = { _ in }) throws {
        let world = try WorldSetup()
        let comm = world.comm
        Threading.setThreads(model.threads)
        var cfg = try TrainConfig.load(model.config)
        try configure(&cfg)
        if let b = batchSize { cfg.batchSize = b }
        if let a = accumSteps { cfg.accumSteps = a }
        if let e = epochs { cfg.overrideEpochs(e) }
        if let lr { cfg.overrideLR(lr) }
        if let precision { cfg.precision = precision }
        cfg.precision = applyPrecision(cfg.precision, echo: comm.rank == 0)
        // On resume, the checkpoint's global batch is split over this world size.
        func adoptLayout(resumingFrom dir: URL?) throws {
            guard let dir else { return }
            let st = try Checkpointer.readState(dir)
            let (layout, note) = try StepLayout.forRun(config: cfg, worldSize: comm.size, resuming: st,
                                                       explicitAccum: accumSteps != nil, explicitBatch: batchSize != nil)
            cfg.batchSize = layout.batchSize
            cfg.accumSteps = layout.accumSteps
            if let note, comm.rank == 0 { print(note) }
        }
        // The overrides and the world size, checked before anything is built (on every rank; a
        // failure ends the job cleanly on all of them, with the error printed once).
        try world.agreeOnFailure {
            if resume && coordinator == nil { try adoptLayout(resumingFrom: Checkpointer.latest(outputDir)) }
            try cfg.validate(worldSize: comm.size)
        }
        if (evalEvery ?? cfg.evalEvery) > 0 {
            // The evaluation reads these keys (a pretraining run evaluates with them too).
            let read = ["test_file", "val_file", "image_root", "k_test", "batch_size_test"]
            cfg.notes.removeAll { n in read.contains { n.contains("note: \($0) is ignored") } }
        }
        if comm.rank == 0 { cfg.notes.forEach { print($0) } }
        let source: BatchSource
        var link: CoordinatorLink? = nil
        var committedResumeStep = 0
        if let n = synthetic {
            source = SyntheticSource(SyntheticBatches(batchSize: cfg.batchSize, length: cfg.maxLength, imageRes: cfg.model.imageRes,
                                                      vocabSize: cfg.model.bert.vocabSize, seed: model.seed), rank: comm.rank, iterationsPerEpoch: n,
                                     layout: StepLayout(batchSize: cfg.batchSize, ranks: comm.size, accumSteps: cfg.accumSteps))
        } else if let endpoint = coordinator {
            var auth = ClientAuth.none
            if let dir = curveKeys {
                let keys = try CurveKeyFiles.loadClient(from: URL(fileURLWithPath: dir))
                auth = .curve(serverKey: keys.serverKey, client: keys.client)
            } else if let t = token ?? ProcessInfo.processInfo.environment["ALBEF_JOB_TOKEN"] {
                auth = .token(t)
            }
            let spec = corpus ?? cfg.trainFiles.joined(separator: "::")
            let index = try loadIndex(spec)
            let l = try CoordinatorLink(endpoint: endpoint, auth: auth, jobId: jobId, comm: comm, corpusFingerprint: index.fingerprint)
            link = l
            // The coordinator decides where the job resumes (see CoordinatorLink.agreedRegistration)
            // and how many epochs it has; a refused registration (another corpus index) ends here.
            let agreed: (resumeStep: Int, epochs: Int)
            do { agreed = try l.agreedRegistration(timeout: l.ranges.patience) } catch {
                print("rank \(comm.rank): error: \(error) (this rank's corpus: \(spec))")
                l.close(commitTimeout: 0)
                world.abort(2)
            }
            committedResumeStep = agreed.resumeStep
            if resume {
                let committedDir = agreed.resumeStep > 0
                    ? Checkpointer.directory(outputDir).appendingPathComponent(String(format: "step_%08d", agreed.resumeStep)) : Checkpointer.latest(outputDir)
                if let d = committedDir, FileManager.default.fileExists(atPath: d.appendingPathComponent("state.json").path) {
                    try world.agreeOnFailure(cleanup: { l.close(commitTimeout: 0) }) {
                        try adoptLayout(resumingFrom: d)
                        try cfg.validate(worldSize: comm.size)
                    }
                }
            }
            if agreed.epochs > 0 && agreed.epochs != cfg.epochs {
                if comm.rank == 0 { print("the coordinator plans \(agreed.epochs) epochs (the config says \(cfg.epochs)): training \(agreed.epochs)") }
                cfg.overrideEpochs(agreed.epochs)
            }
            // Every rank's stream holds ⌊N/W⌋ samples of each epoch (see LeasePlanner).
            let perEpoch = max(1, index.totalSamples / comm.size / max(cfg.batchSize * cfg.accumSteps, 1))
            source = try makeCorpusSource(config: cfg, corpus: corpus, rank: comm.rank, worldSize: comm.size, seed: model.seed,
                                          threads: loaderThreads, outputDir: outputDir, ranges: { [ranges = l.ranges] in ranges.source(epoch: $0) },
                                          iterationsPerEpoch: perEpoch, onBadSample: l.badSampleReporter)
        } else {
            source = try makeCorpusSource(config: cfg, corpus: corpus, rank: comm.rank, worldSize: comm.size, seed: model.seed,
                                          threads: loaderThreads, outputDir: outputDir)
        }
        let trainer = try ModelTrainer<Model>(config: cfg, comm: comm, seed: model.seed)
        if comm.rank == 0 {
            print("albef-worker: \(comm.size) rank(s) × \(model.threads) thread(s); config \(model.config); \(trainer.model.online!.count) trainable parameters; \(trainer.layout); \(source.iterationsPerEpoch) iterations/epoch")
        }
        var opts = RunOptions()
        opts.outputDir = outputDir
        opts.maxSteps = maxSteps
        opts.maxSeconds = maxSeconds
        opts.logEvery = logEvery
        opts.checkpointEvery = checkpointEvery
        opts.keepCheckpoints = keepCheckpoints
        opts.tensorBoard = tensorboard
        opts.divergenceCheckEvery = divergenceCheckEvery
        opts.resume = resume
        opts.recordSamples = recordSamples
        if link != nil {
            let committed = committedResumeStep
            if resume && committed > 0 {
                opts.resumeStep = committed
            } else if comm.rank == 0 && resume && Checkpointer.latest(outputDir) != nil {
                print("resume: warning: the coordinator has no committed checkpoint for job \(jobId); resuming from \(Checkpointer.latest(outputDir)!.path), which its ledger does not account for")
            } else if comm.rank == 0 && !resume && committed > 0 {
                print("warning: job \(jobId) is at committed checkpoint step \(committed) on the coordinator; without --resume this run starts from step 0 and does not train again the samples committed before it")
            }
        }
        let run = ModelTrainingRun(trainer: trainer, source: source, options: opts)
        if let ls = source as? LoaderSource { run.sampleName = ls.sampleName }
        run.evalEvery = evalEvery ?? cfg.evalEvery
        if run.evalEvery > 0 {
            let splits: [(String, String)] = evalFile.map { $0.split(separator: ",").map { f in
                (((String(f) as NSString).lastPathComponent as NSString).deletingPathExtension, String(f)) } }
                ?? [("val", cfg.retrieval.valFile), ("test", cfg.retrieval.testFile)].compactMap { n, f in f.map { (n, $0) } }
            guard !splits.isEmpty else {
                throw ValidationError("--eval-every \(run.evalEvery): nothing to evaluate; set val_file / test_file in \(model.config) or pass --eval-file")
            }
            let tokenizer = try BertTokenizer(vocabularyURL: vocabularyURL(cfg))
            let (k, chunk, root, res) = (cfg.retrieval.kTest, cfg.retrieval.batchSizeTest, cfg.retrieval.imageRoot, cfg.model.imageRes)
            let (output, rank0) = (outputDir, comm.rank == 0)
            run.evaluate = { [unowned run] epochs in
                var out: [(String, Double)] = []
                var selectBy: Double?
                for (n, (name, file)) in splits.enumerated() {
                    let e = try RetrievalSplitEvaluation.run(model: trainer.model, annotation: file, imageRoot: root, imageSize: res,
                                                             tokenizer: tokenizer, k: k, imageChunk: chunk, comm: comm)
                    out += e.recall.byName.map { ("\(name)/\($0.0)", $0.1) }
                    // Retrieval.py keeps the checkpoint of the best val r_mean (here: val, else the first split).
                    if name == "val" || (n == 0 && !splits.contains { $0.0 == "val" }) { selectBy = e.recall.rMean }
                }
                if rank0, let r = selectBy, let ck = run.lastCheckpoint {
                    try BestCheckpoint.offer(output: output, checkpoint: ck, epochsDone: epochs, step: trainer.globalStep,
                                             metric: "\(splits.first { $0.0 == "val" }?.0 ?? splits[0].0)/r_mean", value: r)
                }
                return out
            }
        }
        if let link, let ls = source as? LoaderSource { link.attach(to: run, source: ls) }
        installStopSignalHandlers()
        run.stopSignal = { trainStopSignal }
        do { try run.run() } catch {
            print("rank \(comm.rank): error: \(error)")
            link?.close(commitTimeout: 5)
            world.abort(2)
        }
        link?.close()
        if run.stoppedBySignal != 0 {
            if comm.rank == 0 {
                let name = run.stoppedBySignal > 0 ? String(cString: strsignal(run.stoppedBySignal)) + " (\(run.stoppedBySignal))" : "a signal on another rank"
                print("stopped by \(name) at step \(trainer.globalStep) after its checkpoint; continue with --resume (exit status \(exitStoppedBySignal))")
            }
        } else if run.stoppedByCommand, comm.rank == 0 { print("stopped by command at step \(trainer.globalStep)") }
        if run.finished, comm.rank == 0 { print("finished: \(run.epochsDone) epoch(s) at step \(trainer.globalStep)") }
        if comm.rank == 0 {
            let h = run.history
            if let f = h.first, let l = h.last {
                print(String(format: "done: %d steps; loss %.4f → %.4f (ita %.3f → %.3f, itm %.3f → %.3f, mlm %.3f → %.3f)", h.count, f.loss, l.loss,
                             f.lossITA, l.lossITA, f.lossITM, l.lossITM, f.lossMLM, l.lossMLM))
            }
            if let c = run.lastCheckpoint { print("last checkpoint: \(c.path)") }
        }
        comm.barrier()
        fflush(stdout)
        if run.stoppedBySignal != 0 && !run.finished { throw ExitCode(exitStoppedBySignal) }
    }
}

/// The communicator for this process: MPI when launched by mpirun/srun, else a single rank.
final class WorldSetup {
    let comm: Communicator
    let mpi: MPIEnvironment?
    init() throws {
        if MPIEnvironment.launchedByMPI {
            let env = try MPIEnvironment()
            mpi = env
            comm = MPICommunicator(env)
        } else {
            mpi = nil
            comm = LocalWorld(size: 1).communicators()[0]
        }
    }
    func abort(_ code: Int32) -> Never {
        if let mpi { mpi.abort(code) }
        exit(code)
    }

    /// Runs `body` on every rank and agrees on its outcome with one allgather: when it threw on
    /// any rank, the failed ranks print their error (rank 0 alone when it failed too, as the ranks
    /// usually fail alike), `cleanup` runs, and every rank finalizes MPI and exits 1, so the
    /// launcher forwards the message (an uncoordinated exit lets mpirun kill ranks whose output
    /// is still on its way). A single process rethrows.
    func agreeOnFailure(cleanup: () -> Void = {}, _ body: () throws -> Void) throws {
        var failure: Error?
        do { try body() } catch { failure = error }
        guard let mpi else { if let failure { throw failure }; return }
        let failed = comm.allGather(failure == nil ? 0 : 1)
        guard failed.contains(1) else { return }
        if let failure, comm.rank == 0 || failed[0] == 0 {
            FileHandle.standardError.write(Data("rank \(comm.rank): error: \(failure)\n".utf8))
        }
        if comm.rank == 0 { print("\(failed.filter { $0 == 1 }.count) of \(comm.size) rank(s) failed before training; nothing was changed") }
        cleanup()
        mpi.finalizeAndExit(1)
    }
}

/// `Retrieval.py`'s `checkpoint_best.pth`: after each epoch-end evaluation, rank 0 copies the
/// epoch's `model.safetensors` to `OUTPUT/checkpoint_best/model.safetensors` when its selection
/// metric (val r_mean) beats the best so far (`OUTPUT/checkpoint_best/best.json`, so a resumed run
/// keeps comparing against it). Written under a temporary name and renamed into place; at every
/// moment either the previous best or the new one is complete on disk.
enum BestCheckpoint {
    static func offer(output: String, checkpoint: URL, epochsDone: Int, step: Int, metric: String, value: Double) throws {
        let fm = FileManager.default
        let dir = URL(fileURLWithPath: output).appendingPathComponent("checkpoint_best")
        let record = dir.appendingPathComponent("best.json")
        // The previous best, set aside while the new one is renamed into place (below); a crash
        // between those two renames leaves it here, and it is put back before anything else.
        let previous = URL(fileURLWithPath: output).appendingPathComponent(".previous-checkpoint_best")
        if !fm.fileExists(atPath: dir.path) && fm.fileExists(atPath: previous.path) { try fm.moveItem(at: previous, to: dir) }
        if let d = fm.contents(atPath: record.path), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
           let best = o["value"] as? Double, best >= value {
            return
        }
        let tmp = URL(fileURLWithPath: output).appendingPathComponent(".tmp-checkpoint_best")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        try fm.copyItem(at: checkpoint.appendingPathComponent("model.safetensors"), to: tmp.appendingPathComponent("model.safetensors"))
        let o: [String: Any] = ["epoch": epochsDone - 1, "step": step, "metric": metric, "value": value, "checkpoint": checkpoint.path]
        try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            .write(to: tmp.appendingPathComponent("best.json"))
        if fm.fileExists(atPath: dir.path) {
            try? fm.removeItem(at: previous)
            try fm.moveItem(at: dir, to: previous)
        }
        try fm.moveItem(at: tmp, to: dir)
        try? fm.removeItem(at: previous)
        print("checkpoint_best: epoch \(epochsDone - 1) (\(metric) \(String(format: "%.2f", value))) → \(dir.path)/model.safetensors")
    }
}
