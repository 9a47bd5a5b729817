import ALBEF
import Foundation

/// Where a rank's batches come from (a corpus loader, leases from the coordinator, or
/// synthetic data). Positions are opaque JSON strings so checkpoints resume sample-exactly.
public protocol BatchSource: AnyObject {
    /// Batches per rank per epoch (ALBEF's `len(data_loader)`; drives the α ramp and warmup).
    var iterationsPerEpoch: Int { get }
    /// Prepares epoch `epoch`, starting after `iteration` batches already consumed.
    func start(epoch: Int, iteration: Int) throws
    /// The next batch of the current epoch, or nil at its end. The run reads it before the step
    /// boundary (to agree that every rank has one), so it may be read and never trained.
    func next() throws -> PretrainBatch?
    /// The batch last returned by `next()` was trained: `position()` moves past it.
    func markTrained()
    /// The position after the last batch trained (JSON).
    func position() -> String?
    /// True when the data position is re-planned on resume (coordinator leases), so a checkpoint
    /// of another world size can be resumed without training samples twice.
    var reshardsOnResume: Bool { get }
    /// Continue from a position saved by `position()` (checkpoint resume).
    func restore(position: String?) throws
    /// Counters of skipped bad samples, by kind (for logs and metrics).
    var badSampleCounts: [String: Int] { get }
}

/// Synthetic batches from `SyntheticBatches` (tests and benchmarks).
public final class SyntheticSource: BatchSource {
    let data: SyntheticBatches
    let rank: Int
    public let iterationsPerEpoch: Int
    var epoch = 0, iteration = 0, trained = 0
    public init(_ data: SyntheticBatches, rank: Int, iterationsPerEpoch: Int) {
        self.data = data
        self.rank = rank
        self.iterationsPerEpoch = iterationsPerEpoch
    }
    public func start(epoch: Int, iteration: Int) throws { self.epoch = epoch; self.iteration = iteration; trained = iteration }
    public func next() throws -> PretrainBatch? {
        guard iteration < iterationsPerEpoch else { return nil }
        defer { iteration += 1 }
        return data.batch(rank: rank, step: epoch * iterationsPerEpoch + iteration)
    }
    public func markTrained() { trained += 1 }
    public func position() -> String? { "{\"epoch\":\(epoch),\"iteration\":\(trained)}" }
    /// Synthetic batches depend only on (rank, step): any world size resumes.
    public var reshardsOnResume: Bool { true }
    public func restore(position: String?) throws {}
    public var badSampleCounts: [String: Int] { [:] }
}
