import XCTest
@testable import Training

final class ScheduleTests: XCTestCase {
    /// The spec's table (§4.2): stairs of 100 iterations from 1e-5, then per-epoch cosine.
    func testALBEFScheduleMatchesSpecTable() {
        let s = LRSchedule.albef(baseLR: 1e-4, warmupLR: 1e-5, minLR: 1e-5, warmupEpochs: 20, stepSize: 100, epochs: 30)
        func lr(_ e: Int, _ i: Int) -> Double { s.lr(epoch: e, iteration: i, globalStep: 0) }
        XCTAssertEqual(lr(0, 0), 1e-5, accuracy: 1e-12)
        XCTAssertEqual(lr(0, 100), 1e-5, accuracy: 1e-12)
        XCTAssertEqual(lr(0, 101), 1.45e-5, accuracy: 1e-12)
        XCTAssertEqual(lr(0, 1000), 5.05e-5, accuracy: 1e-12)  // k = 9
        XCTAssertEqual(lr(0, 1001), 5.5e-5, accuracy: 1e-12)   // k = 10
        XCTAssertEqual(lr(0, 2000), 9.55e-5, accuracy: 1e-12)  // k = 19
        XCTAssertEqual(lr(0, 2001), 1e-4, accuracy: 1e-12)
        XCTAssertEqual(lr(1, 0), 9.9753e-5, accuracy: 1e-9)
        XCTAssertEqual(lr(5, 7), 9.3971e-5, accuracy: 1e-9)
        XCTAssertEqual(lr(10, 0), 7.75e-5, accuracy: 1e-9)
        XCTAssertEqual(lr(29, 0), 1.0247e-5, accuracy: 1e-9)
    }

    func testAlphaRamp() {
        XCTAssertEqual(alphaRamp(alpha: 0.4, epoch: 0, iteration: 0, iterationsPerEpoch: 10), 0)
        XCTAssertEqual(alphaRamp(alpha: 0.4, epoch: 0, iteration: 5, iterationsPerEpoch: 10), 0.2, accuracy: 1e-7)
        XCTAssertEqual(alphaRamp(alpha: 0.4, epoch: 1, iteration: 0, iterationsPerEpoch: 10), 0.4)
        XCTAssertEqual(alphaRamp(alpha: 0.4, epoch: 1, iteration: 0, iterationsPerEpoch: 10, rampEpochs: 2), 0.2, accuracy: 1e-7)
    }

    func testCosinePerStep() {
        let s = LRSchedule.cosinePerStep(baseLR: 1e-3, minLR: 0, warmupSteps: 10, totalSteps: 110)
        XCTAssertEqual(s.lr(epoch: 0, iteration: 0, globalStep: 0), 1e-4, accuracy: 1e-12)
        XCTAssertEqual(s.lr(epoch: 0, iteration: 0, globalStep: 9), 1e-3, accuracy: 1e-12)
        XCTAssertEqual(s.lr(epoch: 0, iteration: 0, globalStep: 60), 5e-4, accuracy: 1e-12)
        XCTAssertEqual(s.lr(epoch: 0, iteration: 0, globalStep: 110), 0, accuracy: 1e-12)
    }
}
