import DataPipeline

/// How one optimizer step is split: `ranks` ranks × `accumSteps` micro-steps of `batchSize`
/// samples each. Micro-step `m` of rank `r` is slot `m·ranks + r` of the step's
/// `slots = ranks × accumSteps`; a slot owns its data stream (``SlotPlan``) and its random
/// streams (``RankStreams``, keyed by slot), and the step's momentum features enter the queue in
/// slot order. So a layout with the same `slots` and `batchSize` computes the same step whatever
/// its ranks/micro-steps split — up to the order in which gradients are summed (exactly the same
/// for two slots, where the one sum is commutative).
///
/// The global batch `G = batchSize × ranks × accumSteps` is what the config says at the first
/// launch and stays fixed for the job: a resume on M ranks keeps `batchSize` and sets
/// `accumSteps = G / (batchSize·M)`; when that is not an integer it is an error that lists the
/// world sizes that work (no uneven split: every slot keeps b samples, so the step stays exact).
public struct StepLayout: Codable, Equatable, Sendable, CustomStringConvertible {
    public var batchSize: Int
    public var ranks: Int
    public var accumSteps: Int

    public init(batchSize: Int, ranks: Int, accumSteps: Int) {
        self.batchSize = batchSize
        self.ranks = ranks
        self.accumSteps = accumSteps
    }

    public var slots: Int { ranks * accumSteps }
    public var globalBatch: Int { slots * batchSize }
    /// The slot of micro-step `micro` on rank `rank`.
    public func slot(rank: Int, micro: Int) -> Int { micro * ranks + rank }
    public var description: String { "\(ranks) rank(s) × \(accumSteps) micro-step(s) × batch \(batchSize) = global batch \(globalBatch)" }

    /// World sizes that split this layout's slots evenly (at most `limit`).
    public func worldSizesThatWork(limit: Int = 12) -> [Int] {
        (1...max(1, slots)).filter { slots % $0 == 0 }.prefix(limit).map { $0 }
    }

    /// This job's layout on `ranks` ranks: the same global batch and per-rank batch.
    public func resized(to ranks: Int) throws -> StepLayout {
        guard ranks > 0, slots % ranks == 0 else {
            throw TrainingError.checkpoint("the job's global batch is \(globalBatch) (\(self)); \(ranks) rank(s) cannot split its \(slots) slots of batch \(batchSize) evenly. World sizes that work: \(worldSizesThatWork().map(String.init).joined(separator: ", "))")
        }
        return StepLayout(batchSize: batchSize, ranks: ranks, accumSteps: slots / ranks)
    }

    /// The data layout of a fresh epoch.
    public var freshPlan: SlotPlan { SlotPlan(slots: slots, batchSize: batchSize) }

    /// The layout of a run on `worldSize` ranks: the config's at a fresh start; on resume, the
    /// checkpoint's global batch re-split for `worldSize` (an explicit `--accum-steps` or
    /// `--batch-size` that contradicts it is an error). Returns the layout and a note for the log.
    public static func forRun(config: TrainConfig, worldSize: Int, resuming: CheckpointState?,
                              explicitAccum: Bool, explicitBatch: Bool) throws -> (StepLayout, String?) {
        let asked = StepLayout(batchSize: config.batchSize, ranks: worldSize, accumSteps: config.accumSteps)
        guard let st = resuming else { return (asked, nil) }
        let before = st.layout ?? StepLayout(batchSize: st.batchSize ?? config.batchSize, ranks: st.worldSize, accumSteps: 1)
        if before.ranks == worldSize && asked == before { return (asked, nil) }
        let now = try before.resized(to: worldSize)
        if (explicitAccum && asked.accumSteps != now.accumSteps) || (explicitBatch && asked.batchSize != now.batchSize) {
            throw TrainingError.checkpoint("the checkpoint at step \(st.step) was trained with \(before); on \(worldSize) rank(s) the same global batch is \(now), but the command line asks for batch \(asked.batchSize) × \(asked.accumSteps) micro-step(s). Drop --batch-size/--accum-steps to continue the job, or start a new one")
        }
        if now == asked && before.ranks == worldSize { return (now, nil) }
        return (now, "resume: the checkpoint at step \(st.step) was trained with \(before); continuing with \(now)")
    }
}
