import Distributed
import Foundation
import XCTest
@testable import ALBEF
@testable import Tensor
@testable import Training

final class RetrievalEvalTests: XCTestCase {
    func testRecallsAreOrderedAndK1EqualsITC() {
        let c = TrainConfig.testMicro()
        let model = ALBEFPretrain(c.model, seed: 4)
        let data = SyntheticBatches(batchSize: 6, length: 7, imageRes: 32, vocabSize: 1200, seed: 9)
        let b = data.batch(rank: 0, step: 0)
        // 6 images, 2 captions each (12 texts): captions 2i and 2i+1 belong to image i.
        let ids = b.inputIds + data.batch(rank: 1, step: 0).inputIds
        let mask = b.attentionMask + data.batch(rank: 1, step: 0).attentionMask
        let t2i = (0..<12).map { $0 / 2 }
        let r1 = RetrievalEvaluator.evaluate(model: model, images: b.images, ids: ids, mask: mask, length: 7, textToImage: t2i, k: 1)
        XCTAssertEqual(r1.imgR1, r1.itcImgR1)
        XCTAssertEqual(r1.txtR1, r1.itcTxtR1)
        let r = RetrievalEvaluator.evaluate(model: model, images: b.images, ids: ids, mask: mask, length: 7, textToImage: t2i, k: 4)
        for x in [r.txtR1, r.imgR1] { XCTAssertTrue((0...100).contains(x)) }
        XCTAssertLessThanOrEqual(r.imgR1, r.imgR5)
        XCTAssertLessThanOrEqual(r.imgR5, r.imgR10)
        XCTAssertLessThanOrEqual(r.txtR1, r.txtR5)
        XCTAssertEqual(r.imgR10, 100)  // only 6 images: every caption's image is within the top 10
        XCTAssertEqual(r.chanceImgR1, 100.0 / 6, accuracy: 1e-9)
        XCTAssertTrue(model.isTraining, "evaluation restores training mode")
    }
    /// The streaming scorer: images asked for in chunks (never all at once without
    /// `keepImageFeatures`), two ranks each re-ranking their `Retrieval.py` slice of the rows and
    /// summing the matrices: bit-identical to one process holding every image token.
    func testStreamedAndRankSlicedScoresEqualOneProcess() throws {
        let c = TrainConfig.testMicro()
        let model = ALBEFRetrieval(c.model, seed: 6)
        let data = SyntheticBatches(batchSize: 7, length: 6, imageRes: 32, vocabSize: 1200, seed: 2)
        let b = data.batch(rank: 0, step: 0), b2 = data.batch(rank: 1, step: 0)
        let ids = b.inputIds + b2.inputIds, mask = b.attentionMask + b2.attentionMask  // 14 captions, 7 images
        let per = b.images.count / 7
        let lock = NSLock()
        var asked: [Range<Int>] = []
        func images(_ r: Range<Int>) -> Tensor {
            lock.lock(); asked.append(r); lock.unlock()
            return Tensor(Array(UnsafeBufferPointer(start: b.images.data + r.lowerBound * per, count: r.count * per)), shape: [r.count, 3, 32, 32])
        }
        let whole = RetrievalScoreMatrices.compute(model: model, imageCount: 7, images: images, ids: ids, mask: mask, length: 6, k: 3,
                                                   imageChunk: 3, keepImageFeatures: true)
        asked = []
        let streamed = RetrievalScoreMatrices.compute(model: model, imageCount: 7, images: images, ids: ids, mask: mask, length: 6, k: 3,
                                                      imageChunk: 3)
        XCTAssertNil(streamed.imageFeats)
        XCTAssertTrue(asked.allSatisfy { $0.count <= 3 }, "\(asked)")
        XCTAssertEqual(streamed.scoreI2T, whole.scoreI2T)
        XCTAssertEqual(streamed.scoreT2I, whole.scoreT2I)
        XCTAssertEqual(whole.scoreI2T.filter { $0 != RetrievalScoreMatrices.unscored }.count, 7 * 3, "k scored entries per image row")

        let world = LocalWorld(size: 2)
        let comms = world.communicators()
        var sliced: [Int: RetrievalScoreMatrices] = [:]
        let group = DispatchGroup()
        for r in 0..<2 {
            group.enter()
            let th = Thread {
                defer { group.leave() }
                let slicing = RetrievalScoreMatrices.Slicing(rank: r, size: 2, allReduceSum: { comms[r].allReduceSum($0, count: $1) })
                let m = ALBEFRetrieval(c.model, seed: 6)
                let s = RetrievalScoreMatrices.compute(model: m, imageCount: 7, images: images, ids: ids, mask: mask, length: 6, k: 3,
                                                       imageChunk: 3, slicing: slicing)
                lock.lock(); sliced[r] = s; lock.unlock()
            }
            th.stackSize = 16 << 20
            th.start()
        }
        group.wait()
        XCTAssertEqual(RetrievalScoreMatrices.Slicing(rank: 0, size: 2, allReduceSum: { _, _ in }).rows(7), 0..<4)
        XCTAssertEqual(RetrievalScoreMatrices.Slicing(rank: 1, size: 2, allReduceSum: { _, _ in }).rows(7), 4..<7)
        for r in 0..<2 {
            XCTAssertEqual(sliced[r]?.scoreI2T, whole.scoreI2T, "rank \(r) i2t")
            XCTAssertEqual(sliced[r]?.scoreT2I, whole.scoreT2I, "rank \(r) t2i")
        }
    }
}
