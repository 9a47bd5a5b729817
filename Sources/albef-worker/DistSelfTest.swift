import ALBEF
import ArgumentParser
import Distributed
import Foundation
import Tensor
import Training

/// `mpirun -n N albef-worker dist-selftest`: trains a micro model for k steps on every rank,
/// checks the ranks hold bit-identical parameters, momentum parameters and queues, and (rank 0)
/// that they equal a single process computing every rank's local step and averaging gradients.
struct DistSelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dist-selftest",
        abstract: "Check data-parallel training across the launched ranks against a single-process reference.")
    @Option(help: "Steps to train.") var steps: Int = 3

    func run() throws {
        let world = try WorldSetup()
        let comm = world.comm
        Threading.setThreads(1)
        let config = TrainConfig.testMicro(batchSize: 4, queueSize: 4 * comm.size * 4, dropout: 0.1)
        let data = SyntheticBatches(batchSize: 4, length: 9, imageRes: 32, vocabSize: 1200, seed: 77)
        let trainer = try Trainer(config: config, comm: comm, seed: 5)
        for s in 0..<steps {
            _ = try trainer.step(data.batch(rank: comm.rank, step: s), epoch: 0, iteration: s, iterationsPerEpoch: 10)
        }
        // Bit-identical across ranks: every synced tensor's checksum equal on every rank.
        var mismatches: [String] = []
        for (name, p, n) in trainer.syncedTensors() {
            let cs = comm.allGather(checksum(p, n))
            if Set(cs).count > 1 { mismatches.append(name) }
        }
        let ptrs = comm.allGather(UInt64(trainer.model.queuePtr.value.values[0]))
        if Set(ptrs).count > 1 { mismatches.append("queue_ptr") }
        var failed = !mismatches.isEmpty
        if failed { print("dist-selftest: rank \(comm.rank): tensors differ across ranks: \(mismatches.prefix(5))") }
        if comm.rank == 0 {
            let ref = try DataParallelReference(config: config, worldSize: comm.size, seed: 5)
            for s in 0..<steps { ref.step((0..<comm.size).map { data.batch(rank: $0, step: s) }, epoch: 0, iteration: s, iterationsPerEpoch: 10) }
            func maxDiff(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
                var m: Float = 0
                for i in 0..<n { m = max(m, abs(a[i] - b[i])) }
                return m
            }
            let d = [maxDiff(trainer.model.online!.values.pointer, ref.model.online!.values.pointer, ref.model.online!.count),
                     maxDiff(trainer.model.momentum!.values.pointer, ref.model.momentum!.values.pointer, ref.model.momentum!.count),
                     maxDiff(trainer.model.imageQueue.data, ref.model.imageQueue.data, ref.model.imageQueue.count),
                     maxDiff(trainer.model.textQueue.data, ref.model.textQueue.data, ref.model.textQueue.count)]
            print(String(format: "dist-selftest: max |distributed − single-process| params %.2e momentum %.2e image_queue %.2e text_queue %.2e", d[0], d[1], d[2], d[3]))
            if d.contains(where: { !($0 <= 1e-5) }) || trainer.model.queuePtr.value != ref.model.queuePtr.value { failed = true }
        }
        var f: Float = failed ? 1 : 0
        comm.allReduceSum(&f, count: 1)
        if comm.rank == 0 { print(f == 0 ? "dist-selftest: PASS (\(comm.size) ranks, \(steps) steps, ranks bit-identical)" : "dist-selftest: FAIL") }
        if f != 0 { throw ExitCode(1) }
    }
}
