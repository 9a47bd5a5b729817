import XCTest
@testable import Distributed
import Tensor

final class BF16ReductionTests: XCTestCase {
    /// Round to nearest, ties to even; NaN and infinities kept.
    func testRounding() {
        XCTAssertEqual(roundedToBF16(1), 1)
        let ulp: Float = 1.0 / 128  // bf16 spacing at 1: 2^-7
        XCTAssertEqual(roundedToBF16(1 + ulp / 2), 1, "a tie goes to the even neighbour (1.0)")
        XCTAssertEqual(roundedToBF16(1 + ulp + ulp / 2), 1 + 2 * ulp, "a tie goes to the even neighbour (1 + 2 ulp)")
        XCTAssertEqual(roundedToBF16(1 + ulp * 0.6), 1 + ulp)
        XCTAssertEqual(roundedToBF16(-3.0), -3.0)
        XCTAssertEqual(roundedToBF16(.infinity), .infinity)
        XCTAssertTrue(roundedToBF16(.nan).isNaN)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            let x = Float.random(in: -1e3...1e3, using: &rng)
            XCTAssertLessThanOrEqual(abs(roundedToBF16(x) - x), abs(x) * 0x1p-8 + .leastNormalMagnitude, "\(x)")
        }
    }

    /// Every rank gets the same bits, the rank-order bf16 sum, within the stated bound of the
    /// float32 sum; a bf16 allreduce moves half the bytes (uint16 payload).
    func testBF16AllReduceIsIdenticalOnEveryRankAndClose() {
        let n = 1000, ranks = 3
        var inputs: [[Float]] = []
        for r in 0..<ranks {
            var row: [Float] = []
            for i in 0..<n {
                let x: Double = sin(Double(i * (r + 1)) * 0.37)
                row.append(Float(x) * Float(r + 1))
            }
            inputs.append(row)
        }
        let lock = NSLock()
        var results: [Int: [Float]] = [:]
        LocalWorld(size: ranks).run { rank, comm in
            var b = inputs[rank]
            b.withUnsafeMutableBufferPointer { comm.allReduceSumBF16($0.baseAddress!, count: n) }
            lock.lock(); results[rank] = b; lock.unlock()
        }
        XCTAssertTrue(results[0]! == results[1]! && results[1]! == results[2]!, "ranks differ")
        for i in 0..<n {
            var s = bf16Bits(inputs[0][i])
            for r in 1..<ranks { s = bf16Bits(floatFromBF16(s) + roundedToBF16(inputs[r][i])) }
            XCTAssertEqual(results[0]![i], floatFromBF16(s))
            let exact = inputs.reduce(Float(0)) { $0 + $1[i] }
            let scale = inputs.reduce(Float(0)) { $0 + abs($1[i]) }
            XCTAssertLessThanOrEqual(abs(results[0]![i] - exact), scale * Float(2 * ranks) * 0x1p-9 + 1e-30, "element \(i)")
        }
        XCTAssertEqual(MemoryLayout<UInt16>.size * 2, MemoryLayout<Float>.size)
    }
}
