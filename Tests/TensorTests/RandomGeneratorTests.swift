import XCTest
@testable import Tensor

final class RandomGeneratorTests: XCTestCase {
    func testSameSeedSameStream() {
        var a = RandomGenerator(seed: 42), b = RandomGenerator(seed: 42)
        for _ in 0..<100 { XCTAssertEqual(a.nextUInt64(), b.nextUInt64()) }
        var c = RandomGenerator(seed: 43)
        var d = RandomGenerator(seed: 42).split(0)
        XCTAssertNotEqual(d.nextUInt64(), c.nextUInt64())
    }

    func testSaveRestoreContinuesExactly() throws {
        var a = RandomGenerator(seed: 7)
        for _ in 0..<13 { _ = a.normal() }
        let saved = try JSONEncoder().encode(a)
        let x = (0..<10).map { _ in a.nextFloat() }
        var b = try JSONDecoder().decode(RandomGenerator.self, from: saved)
        XCTAssertEqual(x, (0..<10).map { _ in b.nextFloat() })
    }

    func testDistributions() {
        var r = RandomGenerator(seed: 1)
        let n = 200_000
        var sum = 0.0, sq = 0.0, hits = 0
        var counts = [0, 0, 0]
        for _ in 0..<n {
            let z = Double(r.normal()); sum += z; sq += z * z
            if r.bernoulli(0.15) { hits += 1 }
            counts[r.categorical(weights: [1, 0, 3] as [Float])!] += 1
        }
        XCTAssertEqual(sum / Double(n), 0, accuracy: 0.01)
        XCTAssertEqual(sq / Double(n), 1, accuracy: 0.02)
        XCTAssertEqual(Double(hits) / Double(n), 0.15, accuracy: 0.005)
        XCTAssertEqual(counts[1], 0)
        XCTAssertEqual(Double(counts[2]) / Double(n), 0.75, accuracy: 0.01)
        XCTAssertNil(r.categorical(weights: [0, 0] as [Float]))
        let p = r.permutation(50)
        XCTAssertEqual(p.sorted(), Array(0..<50))
        for _ in 0..<1000 { XCTAssert((0..<7).contains(r.int(below: 7))) }
    }
}
