import Foundation
import Tensor

/// The logging step of a ``TrainingRun``: on rank 0, every `logEvery` steps (and the first), one
/// console line, one `metrics.jsonl` object and the same scalars as TensorBoard events.
final class RunLog<Model: TrainableALBEF> {
    let run: ModelTrainingRun<Model>
    let metrics: FileHandle?
    let board: TensorBoardWriter?
    let start = monotonicSeconds()
    let startStep: Int
    let globalBatch: Int
    let totalSteps: Int
    var windowStart: Double
    var windowSamples = 0

    init(run: ModelTrainingRun<Model>) throws {
        self.run = run
        let rank0 = run.trainer.comm.rank == 0
        try FileManager.default.createDirectory(atPath: run.options.outputDir, withIntermediateDirectories: true)
        let metricsURL = URL(fileURLWithPath: run.options.outputDir).appendingPathComponent("metrics.jsonl")
        metrics = rank0 ? try openAppend(metricsURL) : nil
        // TensorBoard: a new event file per run (a resumed run adds one; TensorBoard merges them).
        board = rank0 && run.options.tensorBoard ? try TensorBoardWriter(directory: run.options.outputDir + "/tensorboard") : nil
        startStep = run.trainer.globalStep
        globalBatch = run.trainer.layout.globalBatch
        totalSteps = run.options.maxSteps ?? (run.trainer.config.epochs * run.source.iterationsPerEpoch)
        windowStart = start
    }

    /// Notes step `m` (trained as iteration `iteration` - 1 of `epoch`) and logs it when due.
    func record(_ m: StepMetrics, epoch: Int, iteration: Int) {
        windowSamples += globalBatch
        let step = m.step
        let options = run.options
        guard run.trainer.comm.rank == 0, options.logEvery > 0, step % options.logEvery == 0 || step == startStep + 1 else { return }
        let now = monotonicSeconds()
        let sps = Double(windowSamples) / max(now - windowStart, 1e-9)
        let done = step - startStep
        var eta = Double(max(0, totalSteps - step)) * (now - start) / Double(max(done, 1))
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
        var obj: [String: Any] = ["step": step, "epoch": epoch, "iteration": iteration, "elapsed_s": now - start,
                                   "global_batch": globalBatch, "world_size": run.trainer.comm.size,
                                   "accum_steps": run.trainer.layout.accumSteps]
        for s in scalars { obj[s.key] = s.value }
        let bad = run.source.badSampleCounts
        if !bad.isEmpty { obj["bad_samples"] = bad }
        if let d = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]) {
            metrics?.write(d + Data("\n".utf8))
        }
        board?.add(scalars: scalars.map { ($0.tag, $0.value) }, step: step)
        windowStart = now
        windowSamples = 0
    }

    /// Logs an epoch-end evaluation on rank 0: one console line, `{"step", "epoch", <name>: value}`
    /// appended to `eval.jsonl` (beside `metrics.jsonl`, whose lines stay one per logged step),
    /// TensorBoard scalars `eval/<name>` at `step`.
    func recordEval(_ values: [(String, Double)], epochsDone: Int, step: Int) {
        guard run.trainer.comm.rank == 0 else { return }
        print("eval after epoch \(epochsDone - 1) (step \(step)): " + values.map { String(format: "%@ %.2f", $0.0, $0.1) }.joined(separator: " | "))
        var obj: [String: Any] = ["step": step, "epoch": epochsDone - 1]
        for (k, v) in values { obj[k] = v }
        let url = URL(fileURLWithPath: run.options.outputDir).appendingPathComponent("eval.jsonl")
        if let d = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes]), let h = try? openAppend(url) {
            h.write(d + Data("\n".utf8))
            try? h.close()
        }
        board?.add(scalars: values.map { ("eval/" + $0.0, $0.1) }, step: step)
    }

    func close() { try? metrics?.close() }
}
