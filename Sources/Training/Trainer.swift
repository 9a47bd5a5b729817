import ALBEF
import Distributed
import Foundation
import NN
import Tensor

/// Errors that stop a training run, with what to do about them.
public enum TrainingError: Error, CustomStringConvertible {
    case queueNotDivisible(queue: Int, globalBatch: Int)
    case divergence(step: Int, tensor: String, checksums: [UInt64])
    case nonFinite(step: Int, what: String)
    case checkpoint(String)
    case data(String)
    case output(String)

    public var description: String {
        switch self {
        case let .queueNotDivisible(q, g):
            return "queue_size \(q) is not divisible by the global batch \(g) (batch_size × world size). HINT: pick queue_size = k·\(g), or change batch_size / the number of ranks."
        case let .divergence(step, t, c):
            return "ranks diverged at step \(step): first differing tensor '\(t)' (per-rank checksums \(c.map { String($0, radix: 16) })). The run stops; resume from the last checkpoint."
        case let .nonFinite(step, what): return "non-finite \(what) at step \(step); the run stops (resume from the last checkpoint with a lower lr)."
        case .checkpoint(let s): return "checkpoint: \(s)"
        case .data(let s): return "data: \(s)"
        case .output(let s): return "output: \(s)"
        }
    }
}

/// The random streams of one rank, derived from the run seed (the same in `Trainer`, the
/// single-process reference and a resume that changes the world size).
public enum RankStreams {
    /// ITM negatives and MLM masks.
    public static func step(seed: UInt64, rank: Int) -> RandomGenerator { RandomGenerator(seed: seed).split(UInt64(rank) &+ 1) }
    /// Dropout draws of the online and momentum BERTs.
    public static func dropout(seed: UInt64, rank: Int) -> RandomGenerator { RandomGenerator(seed: seed).split(0x1000 &+ UInt64(rank)) }
}

/// Per-step numbers (averaged over ranks where noted).
public struct StepMetrics: Codable, Sendable {
    public var step: Int, epoch: Int, iteration: Int
    public var lossITA: Double, lossITM: Double, lossMLM: Double, loss: Double
    public var lr: Double, alpha: Double
    /// The ITC temperature this step used (after ALBEF's clamp to [0.001, 0.5]).
    public var temp: Double = 0
    public var forwardSeconds: Double, backwardSeconds: Double, commWaitSeconds: Double, optimizerSeconds: Double, stepSeconds: Double
}

/// The pretraining trainer (`ALBEFPretrain`: ITA + ITM + MLM), what `albef-worker train` runs.
public typealias Trainer = ModelTrainer<ALBEFPretrain>

/// One data-parallel ALBEF rank: model, optimizer, schedule, gradient sync and the random
/// streams; `step` runs ALBEF's iteration (zero grad, α, forward, backward + bucketed allreduce,
/// AdamW). `Model` is the objective: `ALBEFPretrain` (`Pretrain.py`) or `ALBEFRetrieval`
/// (`Retrieval.py`, whose batches carry image ids and whose `idx_queue` is broadcast,
/// checksummed and checkpointed with the feature queues).
public final class ModelTrainer<Model: TrainableALBEF> {
    public let config: TrainConfig
    public let comm: Communicator
    public let model: Model
    public let optimizer: AdamW
    public let sync: GradientSync
    public let seed: UInt64
    /// How a step is split over ranks and micro-steps (gradient accumulation).
    public let layout: StepLayout
    /// The ITM-negative / MLM-mask stream of each of this rank's slots (micro-step order).
    public var slotRngs: [RandomGenerator]
    /// The dropout stream of each of this rank's slots (micro-step order).
    public var slotDropout: [RandomGenerator]
    /// This rank's first slot's stream for ITM negatives and MLM masks (its only one without accumulation).
    public var rng: RandomGenerator {
        get { slotRngs[0] }
        set { slotRngs[0] = newValue }
    }
    public private(set) var globalStep = 0

    /// Builds the model (same init on every rank, then rank 0's state is broadcast, as DDP does).
    public init(config: TrainConfig, comm: Communicator, seed: UInt64) throws {
        layout = StepLayout(batchSize: config.batchSize, ranks: comm.size, accumSteps: config.accumSteps)
        let g = layout.globalBatch
        guard config.model.queueSize % g == 0 else { throw TrainingError.queueNotDivisible(queue: config.model.queueSize, globalBatch: g) }
        self.config = config
        self.comm = comm
        self.seed = seed
        model = Model.build(config, seed: seed)
        let rank = comm.rank
        let pretrained = try model.loadInitialWeights(config) { if rank == 0 { print($0) } }
        let fp32Grads = try config.applyBF16WeightGradPolicy(to: model)
        if rank == 0 && MatmulPrecision.current == .bf16 {
            print("precision: bf16 weight gradients in fp32 for " + (fp32Grads.isEmpty ? "no module (every GEMM in bf16, autocast's policy)"
                : fp32Grads.map { "\($0.name) (\($0.matrices) \($0.matrices == 1 ? "matrix" : "matrices"))" }.joined(separator: ", ")))
        }
        // Accumulation sums whole micro-step gradients before one reduction: the flat layout.
        model.pack(gradients: config.optimizerInBackward && layout.accumSteps == 1 ? .deferred : .flat)
        optimizer = AdamW(model.online!, lr: Float(config.lr), weightDecay: Float(config.weightDecay))
        if config.pretrainedLRMult != 1 {
            for (i, t) in model.online!.tensors.enumerated() where pretrained.contains(ObjectIdentifier(t)) {
                optimizer.lrScale[i] = Float(config.pretrainedLRMult)
            }
        }
        sync = GradientSync(comm: comm, params: model.online!, bucketBytes: Int(config.gradBucketMB * 1_048_576))
        sync.optimizer = optimizer
        sync.divisor = layout.slots
        sync.reduceInBF16 = config.gradReduceBF16
        if config.gradHierarchical, let mpi = comm as? MPICommunicator {
            let g = mpi.useHostGroups()
            if rank == 0 {
                print(g.map { "gradients: reduced by host (\($0.hosts) hosts; within each host, across hosts by one rank each, back)" }
                      ?? "gradients: grad_topology hierarchical, but the ranks are on one host or one per host: one flat allreduce")
            }
        }
        if config.gradOverlap && comm.size > 1 {
            if let mpi = comm as? MPICommunicator, !mpi.environment.threadsSerialized {
                if rank == 0 { print("warning: grad_overlap thread needs MPI_THREAD_SERIALIZED, which this MPI does not provide: buckets reduced on the training thread") }
            } else {
                sync.overlap = ReductionThread()
                if rank == 0 { print("gradients: \(sync.bucketer.buckets.count) buckets reduced on a communication thread while backward goes on") }
            }
        }
        let lay = layout
        let slots = (0..<lay.accumSteps).map { lay.slot(rank: rank, micro: $0) }
        slotRngs = slots.map { RankStreams.step(seed: seed, rank: $0) }
        slotDropout = slots.map { RankStreams.dropout(seed: seed, rank: $0) }
        model.dropoutRandom.generator = slotDropout[0]
        broadcastState(root: 0)
    }

    /// The slots of this rank, in micro-step order.
    public var slots: [Int] { (0..<layout.accumSteps).map { layout.slot(rank: comm.rank, micro: $0) } }

    /// Copies `root`'s parameters, momentum parameters, queues and queue pointer to every rank.
    public func broadcastState(root: Int) {
        guard comm.size > 1 else { return }
        comm.broadcast(model.online!.values.pointer, count: model.online!.count, root: root)
        comm.broadcast(model.momentum!.values.pointer, count: model.momentum!.count, root: root)
        comm.broadcast(model.imageQueue.data, count: model.imageQueue.count, root: root)
        comm.broadcast(model.textQueue.data, count: model.textQueue.count, root: root)
        var ptr = model.queuePtr.value.values[0]
        withUnsafeMutableBytes(of: &ptr) { comm.broadcast(bytes: $0.baseAddress!, count: 8, root: root) }
        model.queuePtr.value = IntTensor([ptr], shape: [1])
        if let q = model.imageIDQueue {
            var ids = q.value.values
            ids.withUnsafeMutableBytes { comm.broadcast(bytes: $0.baseAddress!, count: $0.count, root: root) }
            q.value = IntTensor(ids, shape: q.value.shape)
        }
    }

    /// Gathers `[B]` image ids from every rank in rank order → `[G]` (as raw 64-bit words).
    func allGatherIds(_ ids: [Int64]) -> [Int64] {
        if comm.size == 1 { return ids }
        var out = [Int64](repeating: 0, count: ids.count * comm.size)
        ids.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                comm.allGather(src.baseAddress!.assumingMemoryBound(to: Float.self), count: ids.count * 2,
                               into: dst.baseAddress!.assumingMemoryBound(to: Float.self))
            }
        }
        return out
    }

    /// Gathers `[B, E]` features from every rank in rank order → `[G, E]`.
    func allGather(_ t: Tensor) -> Tensor {
        if comm.size == 1 { return t }
        let out = Tensor(uninitialized: [t.shape[0] * comm.size, t.shape[1]])
        comm.allGather(t.data, count: t.count, into: out.data)
        return out
    }

    /// One training iteration on this rank's `batch` (no accumulation).
    public func step(_ batch: PretrainBatch, epoch: Int, iteration: Int, iterationsPerEpoch: Int,
                     injection: StepInjection = StepInjection()) throws -> StepMetrics {
        try step([batch], epoch: epoch, iteration: iteration, iterationsPerEpoch: iterationsPerEpoch, injection: injection)
    }

    /// One optimizer step on this rank's micro-batches (one per micro-step, in order).
    ///
    /// One micro-step: ALBEF's forward and backward (`accumSteps` = 1: with each gradient bucket
    /// reduced — and, optimizer-in-backward, applied — as backward finishes it). Several: each
    /// micro-step's forward/backward on its slot's streams, the momentum encoders updated once
    /// (at the first, as each DDP rank does once per step), every micro-step seeing the queue as
    /// it was at the start of the step; the micro-step gradients summed in a separate buffer, one
    /// allreduce, scaled by 1/(ranks × micro-steps), one AdamW step, then the momentum features of
    /// every slot enqueued in slot order. That is DDP over `slots` ranks computed on fewer.
    public func step(_ micro: [PretrainBatch], epoch: Int, iteration: Int, iterationsPerEpoch: Int,
                     injection: StepInjection = StepInjection()) throws -> StepMetrics {
        precondition(micro.count == layout.accumSteps, "Trainer.step: \(micro.count) micro-batches for \(layout.accumSteps) micro-steps")
        // bf16: weights split in place by the GEMMs are joined by the optimizer; whatever is left
        // (a weight no optimizer segment covers, or a step that throws) is joined here, so nothing
        // after a step (checkpoints, the divergence check, evaluation) sees split values.
        defer { BF16Weights.joinAll() }
        let t0 = monotonicSeconds()
        let (lr, alpha) = config.rates(epoch: epoch, iteration: iteration, globalStep: globalStep, iterationsPerEpoch: iterationsPerEpoch)
        optimizer.lr = Float(lr)
        var sums: [Double] = [0, 0, 0]
        var forward = 0.0, backward = 0.0, inBackward = 0.0
        var temp = 0.0
        let on = model.online!
        let fused = on.gradientLayout == .deferred
        if micro.count == 1 {
            on.zeroGradients()
            model.dropoutRandom.generator = slotDropout[0]
            let out = model.trainingForward(micro[0], alpha: alpha, rng: &slotRngs[0], injection: injection, updateMomentum: true,
                                            allGather: allGather, allGatherIds: allGatherIds)
            slotDropout[0] = model.dropoutRandom.generator
            let t1 = monotonicSeconds()
            temp = Double(model.temp.item)
            guard out.total.item.isFinite else { throw TrainingError.nonFinite(step: globalStep, what: "loss \(out.total.item)") }
            if fused { optimizer.beginStep() }  // buckets are applied as backward finishes them
            out.total.backward(prepare: sync.prepare, afterNode: sync.afterNode)
            model.commitEnqueue()
            forward = t1 - t0
            backward = monotonicSeconds() - t1
            sums = [Double(out.ita), Double(out.itm), Double(out.mlm)]
        } else {
            let acc = Storage(count: on.count)
            var features: [PendingFeatures] = []
            for (m, batch) in micro.enumerated() {
                let ta = monotonicSeconds()
                on.zeroGradients()
                model.dropoutRandom.generator = slotDropout[m]
                let out = model.trainingForward(batch, alpha: alpha, rng: &slotRngs[m], injection: injection, updateMomentum: m == 0,
                                                allGather: allGather, allGatherIds: allGatherIds)
                slotDropout[m] = model.dropoutRandom.generator
                let tb = monotonicSeconds()
                temp = Double(model.temp.item)
                guard out.total.item.isFinite else { throw TrainingError.nonFinite(step: globalStep, what: "loss \(out.total.item) (micro-step \(m))") }
                out.total.backward()
                if let f = model.takePendingEnqueue() { features.append(f) }
                // The micro-steps' gradients are summed whole (acc + g, the two-term sum two
                // ranks' allreduce computes): the earlier ones in `acc`, the last one's added in
                // place in the gradient buffer, which the reduction then reads.
                let g = on.gradients!.pointer
                if m == 0 {
                    acc.pointer.update(from: g, count: on.count)
                } else if m < micro.count - 1 {
                    saxpy(on.count, alpha: 1, x: g, y: acc.pointer)
                } else {
                    saxpy(on.count, alpha: 1, x: acc.pointer, y: g)
                }
                sums[0] += Double(out.ita)
                sums[1] += Double(out.itm)
                sums[2] += Double(out.mlm)
                forward += tb - ta
                backward += monotonicSeconds() - tb
            }
            model.enqueue(features)
        }
        let t2 = monotonicSeconds()
        sync.finish()
        let t3 = monotonicSeconds()
        if !fused { optimizer.update() }
        let t4 = monotonicSeconds()
        // Optimizer-in-backward: report the bucket updates as optimizer time, not backward.
        if fused { inBackward = sync.optimizerSeconds; backward -= inBackward }
        sums.withUnsafeMutableBufferPointer { comm.allReduceSum($0.baseAddress!, count: 3) }
        let w = Double(layout.slots)
        globalStep += 1
        return StepMetrics(step: globalStep, epoch: epoch, iteration: iteration, lossITA: sums[0] / w, lossITM: sums[1] / w,
                           lossMLM: sums[2] / w, loss: (sums[0] + sums[1] + sums[2]) / w, lr: lr, alpha: Double(alpha), temp: temp,
                           forwardSeconds: forward, backwardSeconds: backward, commWaitSeconds: t3 - t2,
                           optimizerSeconds: t4 - t3 + inBackward, stepSeconds: monotonicSeconds() - t0)
    }

    /// Named tensors whose equality across ranks the divergence check verifies.
    public func syncedTensors() -> [(String, UnsafeMutablePointer<Float>, Int)] {
        var out: [(String, UnsafeMutablePointer<Float>, Int)] = []
        for s in model.online!.segments { out.append((s.key, model.online!.values.pointer + s.offset, s.count)) }
        for s in model.momentum!.segments { out.append((s.key, model.momentum!.values.pointer + s.offset, s.count)) }
        out.append(("image_queue", model.imageQueue.data, model.imageQueue.count))
        out.append(("text_queue", model.textQueue.data, model.textQueue.count))
        return out
    }

    /// Compares a checksum of parameters, momentum parameters and queues across ranks; throws
    /// naming the first differing tensor.
    public func checkDivergence() throws {
        guard comm.size > 1 else { return }
        let tensors = syncedTensors()
        var total: UInt64 = 0xcbf2_9ce4_8422_2325
        var per = tensors.map { checksum($0.1, $0.2) }
        var names = tensors.map(\.0)
        if let q = model.imageIDQueue {
            // The int64 ids hashed as their 32-bit halves (the checksum reads bit patterns).
            per.append(q.value.values.withUnsafeBytes { checksum($0.baseAddress!.assumingMemoryBound(to: Float.self), $0.count / 4) })
            names.append("idx_queue")
        }
        for c in per { total = (total ^ c) &* 0x100_0000_01b3 }
        total ^= UInt64(bitPattern: model.queuePtr.value.values[0])
        let all = comm.allGather(total)
        guard Set(all).count > 1 else { return }
        for (i, name) in names.enumerated() {
            let cs = comm.allGather(per[i])
            if Set(cs).count > 1 { throw TrainingError.divergence(step: globalStep, tensor: name, checksums: cs) }
        }
        throw TrainingError.divergence(step: globalStep, tensor: "queue_ptr", checksums: all)
    }

    /// Sets the step counter (resume).
    public func restoreStep(_ s: Int) { globalStep = s }
}

/// FNV-1a over the bit patterns of `n` floats.
public func checksum(_ p: UnsafePointer<Float>, _ n: Int) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    let u = UnsafeRawPointer(p).assumingMemoryBound(to: UInt32.self)
    for i in 0..<n { h = (h ^ UInt64(u[i])) &* 0x100_0000_01b3 }
    return h
}
