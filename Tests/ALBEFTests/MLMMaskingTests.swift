import XCTest
import Tensor
@testable import ALBEF

final class MLMMaskingTests: XCTestCase {
    /// Replays the documented draw order with a copy of the generator and checks every position.
    func testDrawOrderAndRules() {
        let b = 3, l = 7
        var ids = [Int32](repeating: 0, count: b * l)
        for r in 0..<b { ids[r * l] = 101; for c in 1..<(l - r) { ids[r * l + c] = Int32(2000 + r * 10 + c) } }
        var rng = RandomGenerator(seed: 5)
        var replay = rng
        let (input, labels) = maskTokens(ids: ids, batch: b, length: l, vocabSize: 30522, probability: 0.5, rng: &rng)
        let m = (0..<(b * l)).map { _ in replay.bernoulli(0.5) }
        let r = (0..<(b * l)).map { _ in replay.bernoulli(0.8) }
        let q = (0..<(b * l)).map { _ in replay.bernoulli(0.5) }
        let u = (0..<(b * l)).map { _ in Int32(replay.int(below: 30522)) }
        XCTAssertEqual(rng, replay, "generator must be consumed exactly as documented")
        var maskedCount = 0
        for i in 0..<(b * l) {
            let isMasked = m[i] && ids[i] != 0 && ids[i] != 101
            if isMasked { maskedCount += 1 }
            XCTAssertEqual(labels[i], isMasked ? ids[i] : -100, "label \(i)")
            let want: Int32 = !isMasked ? ids[i] : (r[i] ? 103 : (q[i] ? u[i] : ids[i]))
            XCTAssertEqual(input[i], want, "input \(i)")
        }
        XCTAssertGreaterThan(maskedCount, 0)
    }

    func testRatesAndSpecialTokensNeverMasked() {
        let b = 64, l = 25
        var ids = [Int32](repeating: 0, count: b * l)
        for r in 0..<b { ids[r * l] = 101; for c in 1..<20 { ids[r * l + c] = 5000 } }
        var rng = RandomGenerator(seed: 11)
        var masked = 0, toMask = 0, kept = 0, eligible = 0
        for _ in 0..<20 {
            let (input, labels) = maskTokens(ids: ids, batch: b, length: l, vocabSize: 30522, rng: &rng)
            for i in 0..<(b * l) {
                if ids[i] == 0 || ids[i] == 101 { XCTAssertEqual(labels[i], -100); XCTAssertEqual(input[i], ids[i]); continue }
                eligible += 1
                if labels[i] != -100 { masked += 1; if input[i] == 103 { toMask += 1 } else if input[i] == 5000 { kept += 1 } }
            }
        }
        let rate = Double(masked) / Double(eligible)
        XCTAssertEqual(rate, 0.15, accuracy: 0.01)
        XCTAssertEqual(Double(toMask) / Double(masked), 0.8, accuracy: 0.03)
        XCTAssertEqual(Double(kept) / Double(masked), 0.1, accuracy: 0.03)
    }

    func testInjectedMask() {
        var rng = RandomGenerator(seed: 1)
        let ids: [Int32] = [101, 7, 8, 0]
        let (_, labels) = maskTokens(ids: ids, batch: 1, length: 4, vocabSize: 10, rng: &rng,
                                     maskedPositions: [true, false, true, true])
        XCTAssertEqual(labels, [-100, -100, 8, -100])
    }
}
