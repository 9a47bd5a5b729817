import Distributed
import XCTest
@testable import ALBEF
@testable import Tensor
@testable import Training

final class DataParallelTests: XCTestCase {
    /// Two in-process ranks: after k steps every rank holds bit-identical parameters, momentum
    /// parameters and queues, equal to a single process that computes both ranks' local steps
    /// with the same per-rank random streams and averages the gradients; the queue holds the
    /// rank-ordered concatenation of every rank's momentum features.
    func testTwoRanksMatchSingleProcessReference() throws {
        let config = TrainConfig.testMicro(batchSize: 4, queueSize: 32, dropout: 0.1)
        let data = SyntheticBatches(batchSize: 4, length: 9, imageRes: 32, vocabSize: 1200, seed: 77)
        let steps = 3
        let world = LocalWorld(size: 2)
        let lock = NSLock()
        var finals: [Int: ([Float], [Float], [Float], [Float], Int64)] = [:]
        var errors: [String] = []
        world.run { rank, comm in
            do {
                let trainer = try Trainer(config: config, comm: comm, seed: 5)
                for s in 0..<steps {
                    _ = try trainer.step(data.batch(rank: rank, step: s), epoch: 0, iteration: s, iterationsPerEpoch: 10)
                    try trainer.checkDivergence()
                }
                let m = trainer.model
                let on = m.online!, mo = m.momentum!
                let r = (Array(UnsafeBufferPointer(start: on.values.pointer, count: on.count)),
                         Array(UnsafeBufferPointer(start: mo.values.pointer, count: mo.count)),
                         m.imageQueue.scalars, m.textQueue.scalars, m.queuePtr.value.values[0])
                lock.lock(); finals[rank] = r; lock.unlock()
            } catch { lock.lock(); errors.append("\(error)"); lock.unlock() }
        }
        XCTAssertEqual(errors, [])
        guard let a = finals[0], let b = finals[1] else { return XCTFail("missing ranks") }
        XCTAssertTrue(a.0 == b.0, "parameters differ between ranks")
        XCTAssertTrue(a.1 == b.1, "momentum parameters differ between ranks")
        XCTAssertTrue(a.2 == b.2 && a.3 == b.3 && a.4 == b.4, "queues differ between ranks")

        let ref = try DataParallelReference(config: config, worldSize: 2, seed: 5)
        for s in 0..<steps { ref.step([data.batch(rank: 0, step: s), data.batch(rank: 1, step: s)], epoch: 0, iteration: s, iterationsPerEpoch: 10) }
        func maxDiff(_ x: [Float], _ y: [Float]) -> Float { zip(x, y).map { abs($0 - $1) }.max() ?? 0 }
        let on = ref.model.online!, mo = ref.model.momentum!
        XCTAssertLessThan(maxDiff(a.0, Array(UnsafeBufferPointer(start: on.values.pointer, count: on.count))), 1e-5)
        XCTAssertLessThan(maxDiff(a.1, Array(UnsafeBufferPointer(start: mo.values.pointer, count: mo.count))), 1e-5)
        XCTAssertLessThan(maxDiff(a.2, ref.model.imageQueue.scalars), 1e-5)
        XCTAssertLessThan(maxDiff(a.3, ref.model.textQueue.scalars), 1e-5)
        XCTAssertEqual(a.4, ref.model.queuePtr.value.values[0])
        // The last step's queue block is [rank 0 features ; rank 1 features], column-wise.
        let e = config.model.embedDim, q = config.model.queueSize, g = 8
        let start = (Int(a.4) - g + q) % q
        for (r, feats) in ref.lastFeatures.enumerated() {
            for bi in 0..<4 { for i in 0..<e {
                XCTAssertEqual(a.2[i * q + start + r * 4 + bi], feats.0.data[bi * e + i], accuracy: 1e-5)
            } }
        }
    }

    func testQueueNotDivisibleIsAClearError() {
        let config = TrainConfig.testMicro(batchSize: 4, queueSize: 30)
        let comm = LocalWorld(size: 1).communicators()[0]
        XCTAssertThrowsError(try Trainer(config: config, comm: comm, seed: 1)) { e in
            XCTAssertTrue("\(e)".contains("not divisible by the global batch 4"), "\(e)")
        }
    }
}
