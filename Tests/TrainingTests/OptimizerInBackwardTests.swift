import DataPipeline
import Distributed
import NN
import XCTest
@testable import ALBEF
@testable import Tensor
@testable import Training

/// AdamW applied bucket by bucket during backward (no flat gradient buffer) gives bit-identical
/// parameters, moments, momentum parameters and queues to the flat path, on one rank and on two.
final class OptimizerInBackwardTests: XCTestCase {
    func run(world: Int, inBackward: Bool, steps: Int) throws -> [[Float]] {
        var config = TrainConfig.testMicro(batchSize: 4, queueSize: 32)
        config.optimizerInBackward = inBackward
        return try trainedState(config, world: world, steps: steps, seed: 3)
    }

    func testSameNumbersAsFlatGradientsOneRank() throws {
        let flat = try run(world: 1, inBackward: false, steps: 3)
        let fused = try run(world: 1, inBackward: true, steps: 3)
        for (i, name) in ["params", "adam m", "adam v", "momentum", "image queue", "text queue"].enumerated() {
            XCTAssertEqual(flat[i], fused[i], "\(name) differs between the flat and the in-backward optimizer")
        }
        XCTAssertNotEqual(flat[1].filter { $0 != 0 }.count, 0, "the optimizer did not run")
    }

    func testSameNumbersAsFlatGradientsTwoRanks() throws {
        let flat = try run(world: 2, inBackward: false, steps: 2)
        let fused = try run(world: 2, inBackward: true, steps: 2)
        for (i, name) in ["params", "adam m", "adam v", "momentum", "image queue", "text queue"].enumerated() {
            XCTAssertEqual(flat[i], fused[i], "\(name) differs between the flat and the in-backward optimizer (2 ranks)")
        }
    }
}

/// Trains `config` on `world` in-process ranks for `steps` synthetic steps and returns rank 0's
/// parameters, AdamW moments, momentum parameters and queues, after checking every rank holds
/// the same bits (and, with the optimizer in backward, that no parameter kept a gradient).
func trainedState(_ config: TrainConfig, world: Int, steps: Int, seed: UInt64,
                  check: @escaping (Trainer) -> Void = { _ in }) throws -> [[Float]] {
    let data = SyntheticBatches(batchSize: config.batchSize, length: 8, imageRes: 32, vocabSize: 1200, seed: 1)
    let comms = LocalWorld(size: world).communicators()
    var results = [[[Float]]](repeating: [], count: world)
    var errors: [String] = []
    let lock = NSLock()
    DispatchQueue.concurrentPerform(iterations: world) { r in
        do {
            let trainer = try Trainer(config: config, comm: comms[r], seed: seed)
            XCTAssertEqual(trainer.model.online!.gradients == nil, config.optimizerInBackward)
            check(trainer)
            for s in 0..<steps {
                _ = try trainer.step(data.batch(rank: r, step: s), epoch: 0, iteration: s, iterationsPerEpoch: 100)
            }
            let on = trainer.model.online!, mo = trainer.model.momentum!
            let out = [Array(UnsafeBufferPointer(start: on.values.pointer, count: on.count)),
                       Array(UnsafeBufferPointer(start: trainer.optimizer.m.pointer, count: on.count)),
                       Array(UnsafeBufferPointer(start: trainer.optimizer.v.pointer, count: on.count)),
                       Array(UnsafeBufferPointer(start: mo.values.pointer, count: mo.count)),
                       trainer.model.imageQueue.scalars, trainer.model.textQueue.scalars]
            // No parameter keeps a gradient between steps in the deferred layout.
            if config.optimizerInBackward { XCTAssertTrue(on.tensors.allSatisfy { $0.gradStorage == nil }) }
            lock.lock(); results[r] = out; lock.unlock()
        } catch { lock.lock(); errors.append("\(error)"); lock.unlock() }
    }
    XCTAssertEqual(errors, [])
    if world > 1 { for r in 1..<world { XCTAssertEqual(results[r], results[0], "rank \(r) differs from rank 0") } }
    return results[0]
}
