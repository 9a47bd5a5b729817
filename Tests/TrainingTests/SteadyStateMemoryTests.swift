import DataPipeline
import Distributed
import XCTest
@testable import ALBEF
@testable import Tensor
@testable import Training

final class SteadyStateMemoryTests: XCTestCase {
    /// After warm-up, a training step takes every buffer from the pool: no new allocations.
    func testSteadyStateStepDoesNotAllocate() throws {
        let config = TrainConfig.testMicro(batchSize: 4, queueSize: 32)
        let trainer = try Trainer(config: config, comm: LocalWorld(size: 1).communicators()[0], seed: 3)
        let data = SyntheticBatches(batchSize: 4, length: 8, imageRes: 32, vocabSize: 1200, seed: 1)
        let batches = (0..<2).map { data.batch(rank: 0, step: $0) }
        // A fixed MLM mask per batch keeps tensor sizes identical from step to step (the number
        // of masked tokens otherwise varies, and with it the size of the MLM logits).
        var mrng = RandomGenerator(seed: 5)
        let masks = batches.map { maskTokens(ids: $0.inputIds, batch: 4, length: 8, vocabSize: 1200, rng: &mrng) }
        func inj(_ i: Int) -> StepInjection { StepInjection(mlmInputIds: masks[i].input, mlmLabels: masks[i].labels) }
        for s in 0..<4 { _ = try trainer.step(batches[s % 2], epoch: 1, iteration: s, iterationsPerEpoch: 100, injection: inj(s % 2)) }
        let before = BufferPool.shared.counters
        for s in 4..<8 { _ = try trainer.step(batches[s % 2], epoch: 1, iteration: s, iterationsPerEpoch: 100, injection: inj(s % 2)) }
        let after = BufferPool.shared.counters
        XCTAssertEqual(after.allocations, before.allocations, "a steady-state step allocated \(after.allocations - before.allocations) new buffers")
        XCTAssertGreaterThan(after.reuses, before.reuses)
    }
}
