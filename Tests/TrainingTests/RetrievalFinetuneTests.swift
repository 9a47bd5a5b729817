import Distributed
import Foundation
import XCTest
@testable import ALBEF
@testable import NN
@testable import Tensor
@testable import Training

/// Retrieval fine-tuning through the pretraining run loop (`ModelTrainingRun<ALBEFRetrieval>`):
/// data parallelism with the id gather and the `idx_queue`, exact resume, the CLI under mpirun.
final class RetrievalFinetuneTests: XCTestCase {
    func tempDir() -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("rft-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func config(epochs: Int = 2) -> TrainConfig {
        var c = TrainConfig.testMicro(batchSize: 4, queueSize: 32, dropout: 0.1)
        c.adoptRetrievalTask()
        c.epochs = epochs
        c.schedule = .albef(baseLR: 1e-3, warmupLR: 1e-4, minLR: 1e-5, warmupEpochs: 1, stepSize: 1, epochs: epochs)
        return c
    }

    typealias RTrainer = ModelTrainer<ALBEFRetrieval>

    func state(_ t: RTrainer) -> (params: [Float], queues: [Float], ids: [Int64], ptr: Int64) {
        let on = t.model.online!, mo = t.model.momentum!
        return (Array(UnsafeBufferPointer(start: on.values.pointer, count: on.count)) + Array(UnsafeBufferPointer(start: mo.values.pointer, count: mo.count)),
                t.model.imageQueue.scalars + t.model.textQueue.scalars, t.model.idxQueue.value.values, t.model.queuePtr.value.values[0])
    }

    /// Two ranks (batch 4 each) equal one rank accumulating the same two slots (2 micro-steps):
    /// the same gradients, momentum weights, feature queues and — through the id gather — the same
    /// `idx_queue`, which holds both slots' image ids in slot order. The two ranks agree exactly.
    func testTwoRanksEqualOneRankAccumulatingTheirSlots() throws {
        var config = Self.config()
        config.model.bert.hiddenDropoutProb = 0
        let data = SyntheticBatches(batchSize: 4, length: 8, imageRes: 32, vocabSize: 1200, seed: 5)
        let steps = 3
        let world = LocalWorld(size: 2)
        let lock = NSLock()
        var finals: [Int: (params: [Float], queues: [Float], ids: [Int64], ptr: Int64)] = [:]
        var errors: [String] = []
        let out = tempDir()
        let comms = world.communicators()
        let done = DispatchGroup()
        // One thread per rank (concurrentPerform may run the ranks one after the other, and a
        // rank waiting in a collective for the other would never return).
        for r in 0..<2 {
            done.enter()
            let th = Thread {
                defer { done.leave() }
                do {
                    let t = try RTrainer(config: config, comm: comms[r], seed: 7)
                    var o = RunOptions(); o.outputDir = out; o.maxSteps = steps; o.logEvery = 0; o.divergenceCheckEvery = 1
                    o.tensorBoard = false
                    try ModelTrainingRun(trainer: t, source: SyntheticSource(data, rank: r, iterationsPerEpoch: 10, layout: t.layout), options: o).run()
                    lock.lock(); finals[r] = self.state(t); lock.unlock()
                } catch { lock.lock(); errors.append("\(error)"); lock.unlock() }
            }
            th.stackSize = 16 << 20
            th.start()
        }
        done.wait()
        XCTAssertEqual(errors, [])
        let a = try XCTUnwrap(finals[0]), b = try XCTUnwrap(finals[1])
        XCTAssertTrue(a.params == b.params && a.queues == b.queues && a.ids == b.ids && a.ptr == b.ptr, "ranks differ")

        var acc = config
        acc.accumSteps = 2
        let one = try RTrainer(config: acc, comm: LocalWorld(size: 1).communicators()[0], seed: 7)
        var o = RunOptions(); o.outputDir = tempDir(); o.maxSteps = steps; o.logEvery = 0; o.tensorBoard = false
        try ModelTrainingRun(trainer: one, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 10, layout: one.layout), options: o).run()
        let c = state(one)
        XCTAssertEqual(c.ids, a.ids, "idx_queue")
        XCTAssertEqual(c.ptr, a.ptr)
        XCTAssertEqual(a.ptr, Int64(steps * 8 % 32))
        // The queue holds, per step, slot 0's then slot 1's image ids.
        let expected = (0..<steps).flatMap { s in data.batch(rank: 0, step: s).imageIds + data.batch(rank: 1, step: s).imageIds }
        XCTAssertEqual(Array(a.ids.prefix(steps * 8)), expected)
        XCTAssertTrue(a.ids.dropFirst(steps * 8).allSatisfy { $0 == -100 }, "unwritten columns stay -100")
        let dp = zip(a.params, c.params).map { abs($0 - $1) }.max() ?? 0
        let dq = zip(a.queues, c.queues).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThan(dp, 1e-5, "parameters: 2 ranks vs 1 rank × 2 micro-steps")
        XCTAssertLessThan(dq, 1e-5, "queues: 2 ranks vs 1 rank × 2 micro-steps")
        // It trained: the weights moved from the init.
        let init0 = state(try RTrainer(config: config, comm: LocalWorld(size: 1).communicators()[0], seed: 7))
        XCTAssertGreaterThan(zip(init0.params, a.params).map { abs($0 - $1) }.max() ?? 0, 1e-4)
    }

    /// To the end of 2 epochs straight equals one epoch + its checkpoint + a fresh process
    /// resuming, bit for bit (weights, momentum, queues, `idx_queue`, pointer, AdamW, streams);
    /// the epoch-end checkpoint loads strictly into `ALBEFRetrieval` under the reference's keys.
    func testResumeIsBitExactToTheEndOfTraining() throws {
        let config = Self.config(epochs: 2)
        let data = SyntheticBatches(batchSize: 4, length: 8, imageRes: 32, vocabSize: 1200, seed: 3)
        let comm = LocalWorld(size: 1).communicators()[0]
        let a = try RTrainer(config: config, comm: comm, seed: 11)
        var o = RunOptions(); o.outputDir = tempDir(); o.logEvery = 0; o.tensorBoard = false
        let runA = ModelTrainingRun(trainer: a, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 3), options: o)
        try runA.run()
        XCTAssertTrue(runA.finished)
        XCTAssertEqual(a.globalStep, 6)
        XCTAssertEqual(runA.history.map(\.lossMLM), [Double](repeating: 0, count: 6), "retrieval has no MLM")
        XCTAssertEqual(runA.history.first?.alpha, 0, "warm_up: α ramps from 0 in epoch 0")
        XCTAssertEqual(runA.history.last.map { Float($0.alpha) }, config.model.alpha)

        let dir = tempDir()
        let b = try RTrainer(config: config, comm: comm, seed: 11)
        var o1 = RunOptions(); o1.outputDir = dir; o1.maxSteps = 3; o1.logEvery = 0; o1.tensorBoard = false
        try ModelTrainingRun(trainer: b, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 3), options: o1).run()
        let ck = try XCTUnwrap(Checkpointer.latest(dir))
        let file = try SafeTensorsFile(path: ck.appendingPathComponent("model.safetensors").path)
        XCTAssertNotNil(file.entries["idx_queue"])
        let fresh = ALBEFRetrieval(config.model, seed: 1)
        let report = try fresh.load(from: file)
        XCTAssertTrue(report.isClean, report.summary)
        XCTAssertEqual(fresh.idxQueue.value.values, b.model.idxQueue.value.values)

        let c = try RTrainer(config: config, comm: comm, seed: 999)
        var o2 = RunOptions(); o2.outputDir = dir; o2.logEvery = 0; o2.resume = true; o2.tensorBoard = false
        let runC = ModelTrainingRun(trainer: c, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 3), options: o2)
        try runC.run()
        XCTAssertTrue(runC.finished)
        XCTAssertEqual(c.globalStep, 6)
        let sa = state(a), sc = state(c)
        XCTAssertTrue(sa.params == sc.params, "resumed weights differ")
        XCTAssertTrue(sa.queues == sc.queues && sa.ids == sc.ids && sa.ptr == sc.ptr, "resumed queues differ")
        XCTAssertEqual(runA.history.suffix(3).map(\.loss), runC.history.map(\.loss))
    }

    /// `warm_up: false`: α is the config's from the first step.
    func testWarmUpFalseKeepsAlphaConstant() throws {
        var config = Self.config(epochs: 1)
        config.retrieval.warmUp = false
        XCTAssertEqual(config.rates(epoch: 0, iteration: 0, globalStep: 0, iterationsPerEpoch: 10).alpha, config.model.alpha)
        config.retrieval.warmUp = true
        XCTAssertEqual(config.rates(epoch: 0, iteration: 0, globalStep: 0, iterationsPerEpoch: 10).alpha, 0)
    }
    /// One rank of the trainer is `Retrieval.py`'s loop written out: per step α and lr from the
    /// schedule, `forwardStep` with the rank's ITM stream, backward, enqueue, AdamW — the same
    /// weights, queues and `idx_queue` (the trainer's fused optimizer-in-backward and the plain
    /// AdamW pass agree to rounding).
    func testOneRankEqualsTheReferenceLoop() throws {
        var config = Self.config(epochs: 2)
        config.model.bert.hiddenDropoutProb = 0
        let data = SyntheticBatches(batchSize: 4, length: 8, imageRes: 32, vocabSize: 1200, seed: 8)
        let t = try RTrainer(config: config, comm: LocalWorld(size: 1).communicators()[0], seed: 21)
        var o = RunOptions(); o.outputDir = tempDir(); o.logEvery = 0; o.tensorBoard = false
        let run = ModelTrainingRun(trainer: t, source: SyntheticSource(data, rank: 0, iterationsPerEpoch: 3), options: o)
        try run.run()
        XCTAssertTrue(run.finished)

        let m = ALBEFRetrieval(config.model, distill: config.retrieval.distill, seed: 21)
        m.pack()
        let adam = AdamW(m.online!, lr: Float(config.lr), weightDecay: Float(config.weightDecay))
        var rng = RankStreams.step(seed: 21, rank: 0)
        var losses: [Double] = []
        for step in 0..<6 {
            let (epoch, it) = (step / 3, step % 3)
            let (lr, alpha) = config.rates(epoch: epoch, iteration: it, globalStep: step, iterationsPerEpoch: 3)
            let b = data.batch(rank: 0, step: step)
            let batch = RetrievalBatch(images: b.images, inputIds: b.inputIds, attentionMask: b.attentionMask, imageIds: b.imageIds,
                                       batchSize: b.batchSize, length: b.length)
            adam.lr = Float(lr)
            m.online!.zeroGradients()
            let out = m.forwardStep(batch, alpha: Double(alpha), rng: &rng)
            out.total.backward()
            m.commitEnqueue()
            adam.update()
            losses.append(Double(out.lossITA.item + out.lossITM.item))
        }
        let a = state(t)
        let on = m.online!, mo = m.momentum!
        let p = Array(UnsafeBufferPointer(start: on.values.pointer, count: on.count)) + Array(UnsafeBufferPointer(start: mo.values.pointer, count: mo.count))
        XCTAssertLessThan(zip(a.params, p).map { abs($0 - $1) }.max() ?? 1, 1e-5)
        XCTAssertLessThan(zip(a.queues, m.imageQueue.scalars + m.textQueue.scalars).map { abs($0 - $1) }.max() ?? 1, 1e-5)
        XCTAssertEqual(a.ids, m.idxQueue.value.values)
        XCTAssertEqual(a.ptr, m.queuePtr.value.values[0])
        for (x, y) in zip(run.history.map(\.loss), losses) { XCTAssertEqual(x, y, accuracy: 1e-4 * max(1, abs(y))) }
    }
}
