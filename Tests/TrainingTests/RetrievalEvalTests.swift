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
}
