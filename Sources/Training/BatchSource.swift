import ALBEF
import Foundation

/// Where a rank's batches come from (a corpus loader, leases from the coordinator, or
/// synthetic data). Positions are opaque JSON strings so checkpoints resume sample-exactly.
/// A source yields micro-batches: ``StepLayout/accumSteps`` of them make one optimizer step.
public protocol BatchSource: AnyObject {
    /// Optimizer steps per epoch (ALBEF's `len(data_loader)`; drives the α ramp and warmup).
    var iterationsPerEpoch: Int { get }
    /// Prepares epoch `epoch`, starting after `iteration` steps already trained.
    func start(epoch: Int, iteration: Int) throws
    /// The next micro-batch of the current epoch, or nil at its end. The run reads a step's
    /// micro-batches before the step boundary (to agree that every rank has them), so they may
    /// be read and never trained.
    func next() throws -> PretrainBatch?
    /// The micro-batches last returned by `next()` were trained: `position()` moves past them.
    func markTrained()
    /// The position after the last batch trained (JSON).
    func position() -> String?
    /// Continue from checkpoint `state` (written by `state.worldSize` ranks) as rank `rank` of
    /// `layout`: this rank's own position when the layout is the checkpoint's, else the epoch's
    /// remaining samples re-dealt to the new ranks. Throws when the source cannot do that
    /// without training a sample twice or skipping one.
    func resume(from state: CheckpointState, rank: Int, layout: StepLayout) throws
    /// Counters of skipped bad samples, by kind (for logs and metrics).
    var badSampleCounts: [String: Int] { get }
}

/// Synthetic batches from `SyntheticBatches` (tests and benchmarks): the micro-batch of slot j
/// at step s is `data.batch(rank: j, step: s)`, so any world size and split resumes.
public final class SyntheticSource: BatchSource {
    let data: SyntheticBatches
    let rank: Int
    let layout: StepLayout
    public let iterationsPerEpoch: Int
    var epoch = 0, iteration = 0, micro = 0, trained = 0
    public init(_ data: SyntheticBatches, rank: Int, iterationsPerEpoch: Int, layout: StepLayout? = nil) {
        self.data = data
        self.rank = rank
        self.layout = layout ?? StepLayout(batchSize: data.batchSize, ranks: rank + 1, accumSteps: 1)
        self.iterationsPerEpoch = iterationsPerEpoch
    }
    public func start(epoch: Int, iteration: Int) throws { self.epoch = epoch; self.iteration = iteration; micro = 0; trained = iteration }
    public func next() throws -> PretrainBatch? {
        guard iteration < iterationsPerEpoch else { return nil }
        let slot = layout.slot(rank: rank, micro: micro)
        defer {
            micro += 1
            if micro == layout.accumSteps { micro = 0; iteration += 1 }
        }
        return data.batch(rank: slot, step: epoch * iterationsPerEpoch + iteration)
    }
    public func markTrained() { trained = iteration }
    public func position() -> String? { "{\"epoch\":\(epoch),\"iteration\":\(trained)}" }
    public func resume(from state: CheckpointState, rank: Int, layout: StepLayout) throws {}
    public var badSampleCounts: [String: Int] { [:] }
}
