import Control
import DataPipeline
import Distributed
import Foundation

/// Hands the data loader the leases a `CoordinatorClient` receives, in grant order, and knows
/// from the loader's position exactly how much of each lease was trained on.
public final class LeaseRangeSource: SampleRangeSource, @unchecked Sendable {
    let client: CoordinatorClient
    let lock = NSLock()
    /// Leases handed to the loader, in order; completed ones are dropped from the front.
    var handed: [Lease] = []
    var completedThrough: UInt64 = 0
    /// Give up waiting for a lease after this long without one (the coordinator is down).
    public var patience: Double = 600

    public init(client: CoordinatorClient) { self.client = client }

    /// Blocks until the next lease arrives (nil once the coordinator has no more data).
    public func nextRange() throws -> DataPipeline.SampleRange? {
        let deadline = Date().addingTimeInterval(patience)
        while Date() < deadline {
            if let l = client.waitForLease(timeout: 0.5) {
                lock.withLock { handed.append(l) }
                return DataPipeline.SampleRange(shard: Int(l.shard), start: Int(l.start), end: Int(l.end))
            }
            if client.isExhausted { return nil }
        }
        throw TrainingError.data("no lease from the coordinator \(client.endpoint) for \(Int(patience)) s: is `albef-coord serve` running and reachable?")
    }

    /// This rank's data position given the loader's `cursor` (samples of the lease sequence
    /// consumed, in grant order); leases entirely behind it are reported complete.
    public func position(cursor: Int) -> DataPosition {
        lock.withLock {
            var pos = DataPosition(rank: client.rank, leaseId: completedThrough, offset: completedThrough == 0 ? 0 : lastCompletedCount)
            var k = 0
            while k < handed.count {
                let l = handed[k]
                let n = Int(l.end - l.start)
                if cursor - consumedBase >= n {
                    // Entirely consumed.
                    client.completeLease(l)
                    completedThrough = l.id
                    lastCompletedCount = UInt64(n)
                    consumedBase += n
                    pos = DataPosition(rank: client.rank, leaseId: l.id, offset: UInt64(n))
                    k += 1
                    continue
                }
                let inside = cursor - consumedBase
                if inside > 0 { pos = DataPosition(rank: client.rank, leaseId: l.id, offset: UInt64(inside)) }
                break
            }
            handed.removeFirst(k)
            return pos
        }
    }
    var consumedBase = 0
    var lastCompletedCount: UInt64 = 0
}

/// Ties a training run to `albef-coord`: leases feed the loader, every rank heartbeats each step,
/// rank 0 reports progress, polls commands (broadcast by the run at step boundaries) and commits
/// checkpoints with every rank's exact data position.
public final class CoordinatorLink {
    public let client: CoordinatorClient
    public let ranges: LeaseRangeSource
    let comm: Communicator
    weak var source: LoaderSource?
    var samples: UInt64 = 0

    public init(endpoint: String, auth: ClientAuth, jobId: String, comm: Communicator) throws {
        self.comm = comm
        client = try CoordinatorClient(endpoint: endpoint, auth: auth, rank: Int32(comm.rank), worldSize: UInt32(comm.size), jobId: jobId)
        client.register()
        ranges = LeaseRangeSource(client: client)
    }

    /// Installs the hooks on `run` (whose source reads `ranges`).
    public func attach(to run: TrainingRun, source: LoaderSource) {
        self.source = source
        let globalBatch = UInt64(run.trainer.config.batchSize * comm.size)
        run.onStep = { [weak self] m in
            guard let self else { return }
            self.samples += globalBatch
            // Finish the leases the loader has moved past (keeps the rank's prefetch window open).
            if let c = self.source?.loaderPosition?.cursor { _ = self.ranges.position(cursor: c) }
            self.client.sendHeartbeat(step: UInt64(m.step), stepSeconds: m.stepSeconds,
                                      timings: [PhaseTime(name: "forward", seconds: m.forwardSeconds),
                                                PhaseTime(name: "backward", seconds: m.backwardSeconds),
                                                PhaseTime(name: "comm_wait", seconds: m.commWaitSeconds),
                                                PhaseTime(name: "optimizer", seconds: m.optimizerSeconds)])
            if self.comm.rank == 0 {
                self.client.reportProgress(ProgressReport(step: UInt64(m.step), samples: self.samples,
                                                          losses: Losses(ita: m.lossITA, itm: m.lossITM, mlm: m.lossMLM, total: m.loss),
                                                          samplesPerSecond: Double(globalBatch) / max(m.stepSeconds, 1e-9),
                                                          epoch: UInt32(m.epoch)))
            }
        }
        run.commandSource = { [weak self] in
            guard let self, let c = self.client.pollCommand() else { return .none }
            switch c.kind {
            case .stop: return .stop
            case .checkpointNow: return .checkpoint
            case .pause: return .pause
            case .resume: return .resume
            default: return .none
            }
        }
        run.onCheckpoint = { [weak self] url, step in
            guard let self else { return }
            let mine = self.ranges.position(cursor: self.source?.loaderPosition?.cursor ?? 0)
            let ids = self.comm.allGather(mine.leaseId), offs = self.comm.allGather(mine.offset)
            if self.comm.rank == 0 {
                let all = (0..<self.comm.size).map { DataPosition(rank: Int32($0), leaseId: ids[$0], offset: offs[$0]) }
                self.client.commitCheckpoint(step: UInt64(step), path: url.path, positions: all)
            }
        }
    }

    public func close() { client.close() }
}
