import ALBEF
import ArgumentParser
import Distributed
import Foundation
import Tensor
import Training

/// `mpirun -n 2 albef-worker bench-dist --config C`: step time with and without gradient
/// communication, and our bucketed allreduce vs one raw MPI_Allreduce of the same bytes.
struct BenchDist: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-dist",
        abstract: "Data-parallel communication cost (run under mpirun).")
    @Option(help: "ALBEF YAML config.") var config: String
    @Option(help: "Name in the result line.") var name: String?
    @Option(help: "Per-rank batch size.") var batchSize: Int?
    @Option(help: "Measured steps per mode.") var steps: Int = 5
    @Option(help: "Threads per rank.") var threads: Int = 1
    @Option(help: "Gradient bucket reduction: fp32 or bf16 (default: the config's grad_reduce).") var gradReduce: String?
    @Option(help: "Bucket reductions on a communication thread during backward: thread or off (default: the config's grad_overlap).") var gradOverlap: String?
    @Option(help: "flat (one allreduce over all ranks) or hierarchical (within hosts, across hosts, back; default: the config's grad_topology).") var gradTopology: String?

    @Option(help: "Gradient bucket size in MB (default: the config's grad_bucket_mb, 16).") var bucketMb: Double?

    func validate() throws {
        if let g = gradReduce, !["fp32", "bf16"].contains(g) { throw ValidationError("--grad-reduce must be fp32 or bf16, got \(g)") }
        if let g = gradOverlap, !["thread", "off"].contains(g) { throw ValidationError("--grad-overlap must be thread or off, got \(g)") }
        if let g = gradTopology, !["flat", "hierarchical"].contains(g) { throw ValidationError("--grad-topology must be flat or hierarchical, got \(g)") }
    }

    func run() throws {
        let world = try WorldSetup()
        let comm = world.comm
        Threading.setThreads(threads)
        var cfg = try TrainConfig.load(config)
        if let b = batchSize { cfg.batchSize = b }
        if let g = gradReduce { cfg.gradReduceBF16 = g == "bf16" }
        if let g = gradOverlap { cfg.gradOverlap = g == "thread" }
        if let b = bucketMb { cfg.gradBucketMB = b }
        if let g = gradTopology { cfg.gradHierarchical = g == "hierarchical" }
        let g = cfg.batchSize * comm.size
        if cfg.model.queueSize % g != 0 { cfg.model.queueSize = (cfg.model.queueSize / g + 1) * g }
        cfg.textInit = nil
        let trainer = try Trainer(config: cfg, comm: comm, seed: 1)
        let data = SyntheticBatches(batchSize: cfg.batchSize, length: cfg.maxLength, imageRes: cfg.model.imageRes, vocabSize: cfg.model.bert.vocabSize, seed: 3)
        let batch = data.batch(rank: comm.rank, step: 0)
        var waits: [Double] = []
        func measure(_ enabled: Bool) throws -> [Double] {
            trainer.sync.enabled = enabled
            var t: [Double] = []
            for s in 0..<(steps + 1) {
                comm.barrier()
                let m = try trainer.step(batch, epoch: 1, iteration: s, iterationsPerEpoch: 1000)
                if s > 0 { t.append(m.stepSeconds); if enabled { waits.append(m.commWaitSeconds) } }
            }
            return t
        }
        let with = try measure(true), without = try measure(false)
        trainer.sync.enabled = true
        var ours: [Double] = [], raw: [Double] = []
        for _ in 0..<5 { ours.append(trainer.sync.timeBucketedAllReduce()); raw.append(trainer.sync.timeRawAllReduce()) }
        func med(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
        if comm.rank == 0 {
            let label = name ?? URL(fileURLWithPath: config).deletingPathExtension().lastPathComponent
            let mb = Double(trainer.model.online!.count * 4) / 1e6
            print(String(format: "%@: %d ranks × %d thread(s), batch %d/rank, gradients %.1f MB in %d buckets, reduced in %@, %@, %@", label, comm.size, threads, cfg.batchSize, mb, trainer.sync.bucketer.buckets.count, cfg.gradReduceBF16 ? "bf16" : "fp32",
                         trainer.sync.overlap != nil ? "on a communication thread during backward" : "on the training thread as each bucket is final",
                         (comm as? MPICommunicator)?.hostGroups.map { "by host (\($0.hosts) hosts)" } ?? "one flat allreduce"))
            print(String(format: "  step with communication %.3f s, without %.3f s (median of %d); comm wait at the end of backward %.1f ms", med(with), med(without), steps, med(waits) * 1e3))
            print(String(format: "  allreduce of %.1f MB: ours (bucketed) %.1f ms, raw MPI_Allreduce %.1f ms", mb, med(ours) * 1e3, med(raw) * 1e3))
            print(String(format: "dist: config=%@ comm_fraction=%.3f allreduce_vs_raw=%.3f", label, max(0, med(with) - med(without)) / med(with), med(ours) / med(raw)))
        }
        comm.barrier()
    }
}
