import Control
import DataPipeline
import Distributed
import Foundation

/// The lease account of one rank across epochs: each epoch's loader reads the leases of that
/// epoch only (``source(epoch:)``), in grant order; from the loader's position it knows exactly
/// how much of each lease was trained on (and keeps a record of it, ``takeConsumed()``, stored
/// in checkpoints). Leases of an epoch the ranks ended before reading them are left unreturned:
/// the epoch-end checkpoint's commit drops them in the coordinator's ledger.
public final class LeaseRangeSource: @unchecked Sendable {
    let client: CoordinatorClient
    let lock = NSLock()
    /// The epoch whose loader is reading (leases of other epochs are not handed out).
    var epoch = -1
    /// Leases handed to the current epoch's loader and not yet read to their end, in order.
    var handed: [Lease] = []
    /// Loader cursor at the start of `handed[0]`.
    var consumedBase = 0
    /// Samples of `handed[0]` already in `consumed`.
    var recorded: UInt64 = 0
    /// The last lease read to its end.
    var lastCompleted: (id: UInt64, count: UInt64)?
    /// Lease samples read since the last ``takeConsumed()``, in order (adjacent pieces merged).
    var consumed: [LeaseAccount.Use] = []
    /// Give up waiting for a lease after this long without one (the coordinator is down).
    public var patience: Double = 600

    public init(client: CoordinatorClient) { self.client = client }

    /// The range source of `epoch`'s loader (the previous epoch's stops handing out leases).
    public func source(epoch: Int) -> SampleRangeSource {
        lock.withLock {
            self.epoch = epoch
            handed = []
            consumedBase = 0
            recorded = 0
        }
        return EpochLeases(owner: self, epoch: epoch)
    }

    /// The leases of one epoch, for its loader: blocks until the next one arrives; nil once the
    /// epoch has no more for this rank.
    final class EpochLeases: SampleRangeSource, @unchecked Sendable {
        let owner: LeaseRangeSource
        let epoch: Int
        init(owner: LeaseRangeSource, epoch: Int) {
            self.owner = owner
            self.epoch = epoch
        }
        func nextRange() throws -> SampleRange? {
            let deadline = Date().addingTimeInterval(owner.patience)
            while Date() < deadline {
                guard owner.lock.withLock({ owner.epoch == epoch }) else { return nil }
                switch owner.client.takeLease(epoch: UInt32(epoch)) {
                case .lease(let l):
                    let current = owner.lock.withLock { () -> Bool in
                        guard owner.epoch == epoch else { return false }
                        owner.handed.append(l)
                        return true
                    }
                    return current ? l.range() : nil
                case .epochEnded:
                    return nil
                case .waiting:
                    usleep(2000)
                }
            }
            throw TrainingError.data("no lease from the coordinator \(owner.client.endpoint) for \(Int(owner.patience)) s: is `albef-coord serve` running and reachable?")
        }
    }

    /// This rank's data position given the current epoch loader's `cursor` (samples of its lease
    /// sequence consumed, in grant order); leases entirely behind it are reported complete.
    public func position(cursor: Int) -> DataPosition {
        lock.withLock {
            while let l = handed.first {
                let n = l.count
                let inside = UInt64(max(0, min(cursor - consumedBase, Int(n))))
                record(l, upTo: inside)
                if inside < n {
                    if inside > 0 { return DataPosition(rank: client.rank, leaseId: l.id, offset: inside) }
                    break
                }
                // Entirely consumed.
                client.completeLease(l)
                lastCompleted = (l.id, n)
                consumedBase += Int(n)
                recorded = 0
                handed.removeFirst()
            }
            return DataPosition(rank: client.rank, leaseId: lastCompleted?.id ?? 0, offset: lastCompleted?.count ?? 0)
        }
    }

    /// Notes samples `[recorded, upTo)` of `lease` (the first handed one) as read (lock held).
    private func record(_ lease: Lease, upTo: UInt64) {
        guard upTo > recorded else { return }
        let start = lease.start + recorded, end = lease.start + upTo
        if var last = consumed.last, last.leaseId == lease.id, last.end == start {
            last.end = end
            consumed[consumed.count - 1] = last
        } else {
            consumed.append(LeaseAccount.Use(leaseId: lease.id, epoch: lease.epoch, shard: lease.shard, start: start, end: end))
        }
        recorded = upTo
    }

    /// The lease samples read since the previous call (as of the last ``position(cursor:)``).
    public func takeConsumed() -> [LeaseAccount.Use] {
        lock.withLock {
            defer { consumed = [] }
            return consumed
        }
    }
}

/// Ties a training run to `albef-coord`: leases feed the loader, every rank heartbeats each step,
/// rank 0 reports progress, polls commands (broadcast by the run at step boundaries) and commits
/// checkpoints with every rank's exact data position.
public final class CoordinatorLink {
    public let client: CoordinatorClient
    public let ranges: LeaseRangeSource
    let comm: Communicator
    weak var source: LoaderSource?
    /// This rank's position as stored in the checkpoint being written.
    var checkpointPosition: DataPosition?

    public init(endpoint: String, auth: ClientAuth, jobId: String, comm: Communicator, corpusFingerprint: String = "") throws {
        self.comm = comm
        client = try CoordinatorClient(endpoint: endpoint, auth: auth, rank: Int32(comm.rank), worldSize: UInt32(comm.size), jobId: jobId,
                                       corpusFingerprint: corpusFingerprint)
        // Rank 0 registers first (the others in agreedRegistration, once it has its answer): a
        // new world of another size takes over the job through rank 0, whose earlier process the
        // coordinator knows, before any other rank of the new world asks.
        if comm.rank == 0 { client.register() }
        ranges = LeaseRangeSource(client: client)
    }

    /// What the coordinator answered every rank's registration, agreed: the step of the
    /// checkpoint to resume from (the last one the coordinator committed, 0: none) and the epochs
    /// it plans.
    ///
    /// A relaunched job must resume from that checkpoint, not merely the latest one on disk: a
    /// checkpoint written just before the ranks died may never have been committed (its commit
    /// was lost with them), and the coordinator restarts the job from its last committed one,
    /// re-issuing every sample read after it. Resuming from the newer one would train those
    /// samples twice and leave the steps between the two checkpoints out of its ledger.
    /// Collective. Throws when any rank was refused (its message: another corpus index, world
    /// size or job) or rank 0 had no answer within `timeout` seconds.
    public func agreedRegistration(timeout: Double) throws -> (resumeStep: Int, epochs: Int) {
        // Rank 0's answer first, then every other rank registers and waits for its own (a
        // refusal is per rank: e.g. its corpus index).
        var reply: RegistrationReply? = nil
        if comm.rank == 0 { reply = client.waitForRegistration(timeout: timeout) }
        var zeroDone: Int64 = 1
        withUnsafeMutableBytes(of: &zeroDone) { comm.broadcast(bytes: $0.baseAddress!, count: $0.count, root: 0) }
        if comm.rank != 0 {
            client.register()
            reply = client.waitForRegistration(timeout: timeout)
        }
        let refusal = client.registrationRefusal
        var values: [Int64] = [comm.rank == 0 ? Int64(clamping: reply?.resumeStep ?? 0) : 0,
                               comm.rank == 0 ? Int64(reply?.epochs ?? 0) : 0,
                               refusal != nil ? 1 : 0, reply == nil && refusal == nil ? 1 : 0]
        var f = values.map { Float($0) }
        // Steps beyond 2^24 lose nothing here: rank 0's step is broadcast exactly below.
        f.withUnsafeMutableBufferPointer { comm.allReduceSum($0.baseAddress!, count: 4) }
        withUnsafeMutableBytes(of: &values[0]) { comm.broadcast(bytes: $0.baseAddress!, count: $0.count, root: 0) }
        if let refusal { throw TrainingError.data("the coordinator \(client.endpoint) refused rank \(comm.rank): \(refusal.message)") }
        if f[2] > 0 { throw TrainingError.data("the coordinator \(client.endpoint) refused \(Int(f[2])) other rank(s) (see their errors)") }
        guard f[3] == 0 else {
            throw TrainingError.data("no registration reply from the coordinator \(client.endpoint) within \(Int(timeout)) s: is `albef-coord serve` running and reachable (job id \(client.jobId))?")
        }
        return (Int(values[0]), Int(f[1]))
    }

    /// Reports a sample the loader skipped (fire-and-forget; the coordinator counts it by kind
    /// and lists it in `quarantine.jsonl` in its state directory).
    public var badSampleReporter: @Sendable (BadSample, Int) -> Void {
        { [client] bad, shard in client.reportBadSample(shard: UInt32(shard), key: bad.key, kind: bad.kind.rawValue) }
    }

    /// Installs the hooks on `run` (whose source reads `ranges`).
    public func attach<Model>(to run: ModelTrainingRun<Model>, source: LoaderSource) {
        self.source = source
        let globalBatch = UInt64(run.trainer.layout.globalBatch)
        run.onStep = { [weak self] m in
            guard let self else { return }
            // Samples trained by the job, not by this process: a resumed run counts from its
            // checkpoint's step (exact unless the world size changed along the way).
            let samples = UInt64(m.step) * globalBatch
            // Finish the leases the loader has moved past (keeps the rank's prefetch window open).
            if let c = self.source?.loaderPosition?.cursor { _ = self.ranges.position(cursor: c) }
            self.client.sendHeartbeat(step: UInt64(m.step), stepSeconds: m.stepSeconds,
                                      timings: [PhaseTime(name: "forward", seconds: m.forwardSeconds),
                                                PhaseTime(name: "backward", seconds: m.backwardSeconds),
                                                PhaseTime(name: "comm_wait", seconds: m.commWaitSeconds),
                                                PhaseTime(name: "optimizer", seconds: m.optimizerSeconds)])
            if self.comm.rank == 0 {
                self.client.reportProgress(ProgressReport(step: UInt64(m.step), samples: samples,
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
        run.checkpointLeases = { [weak self] in
            guard let self else { return nil }
            let mine = self.ranges.position(cursor: self.source?.loaderPosition?.cursor ?? 0)
            self.checkpointPosition = mine
            return LeaseAccount(leaseId: mine.leaseId, offset: mine.offset, consumed: self.ranges.takeConsumed())
        }
        run.checkpointsProtectedFrom = { [weak self] in
            self?.client.acknowledgedCheckpointStep.map { Int($0) }
        }
        run.onCheckpoint = { [weak self, unowned run] url, step in
            guard let self else { return }
            // The position stored in the checkpoint (nothing was read since it was taken).
            let mine = self.checkpointPosition ?? self.ranges.position(cursor: self.source?.loaderPosition?.cursor ?? 0)
            self.checkpointPosition = nil
            let ids = self.comm.allGather(mine.leaseId), offs = self.comm.allGather(mine.offset)
            if self.comm.rank == 0 {
                let all = (0..<self.comm.size).map { DataPosition(rank: Int32($0), leaseId: ids[$0], offset: offs[$0]) }
                self.client.commitCheckpoint(step: UInt64(step), path: url.path, positions: all, epochsDone: UInt32(run.epochsDone))
            }
        }
    }

    /// Closes the client once the checkpoint commits are acknowledged (rank 0 waits up to
    /// `commitTimeout` seconds, so the final checkpoint reaches the ledger).
    public func close(commitTimeout: Double = 30) {
        if !client.waitForCheckpointCommits(timeout: commitTimeout) {
            print("rank \(comm.rank): warning: the coordinator \(client.endpoint) did not acknowledge \(client.pendingCheckpointCommits) checkpoint commit(s) within \(Int(commitTimeout)) s; its ledger lacks them")
        }
        client.close(commitTimeout: 0)
    }
}
