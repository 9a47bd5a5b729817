import XCTest
@testable import ALBEF

final class PosEmbedInterpolationTests: XCTestCase {
    func testEqualGridIsIdentityAndCLSKept() {
        let p = (0..<(1 + 9) * 2).map { Float($0) * 0.1 }
        XCTAssertEqual(interpolatePosEmbed(p, channels: 2, oldGrid: 3, newGrid: 3), p)
        let up = interpolatePosEmbed(p, channels: 2, oldGrid: 3, newGrid: 5)
        XCTAssertEqual(Array(up[0..<2]), Array(p[0..<2]))
        XCTAssertEqual(up.count, (1 + 25) * 2)
    }

    func testConstantGridStaysConstant() {
        var p = [Float](repeating: 0.7, count: 1 + 16)
        p[0] = -3
        let up = interpolatePosEmbed(p, channels: 1, oldGrid: 4, newGrid: 7)
        for v in up.dropFirst() { XCTAssertEqual(v, 0.7, accuracy: 1e-6) }
    }

    /// A hand-computed value: 2 → 4 upsampling of a 1-channel grid [[0, 1], [2, 3]].
    /// PyTorch bicubic (A = −0.75, align_corners=False): output (0, 0) has src −0.25 in both axes,
    /// taps [−2, −1, 0, 1] clamped → [0, 0, 0, 1] with weights for t = 0.75:
    /// w = [far(1.75), near(0.75), near(0.25), far(1.25)].
    func testHandComputedCorner() {
        let a: Double = -0.75
        func near(_ x: Double) -> Double { ((a + 2) * x - (a + 3)) * x * x + 1 }
        func far(_ x: Double) -> Double { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
        let w = [far(1.75), near(0.75), near(0.25), far(1.25)]
        let w0 = w[0] + w[1] + w[2], w1 = w[3]   // taps 0,0,0 → index 0; tap 1 → index 1
        // Separable: value = Σ_y Σ_x wy wx g[y][x].
        let g: [[Double]] = [[0, 1], [2, 3]]
        let expected = w0 * (w0 * g[0][0] + w1 * g[0][1]) + w1 * (w0 * g[1][0] + w1 * g[1][1])
        let up = interpolatePosEmbed([9, 0, 1, 2, 3], channels: 1, oldGrid: 2, newGrid: 4)
        XCTAssertEqual(Double(up[1]), expected, accuracy: 1e-6)
        // Symmetry: the grid is linear in x and y, the corner opposite mirrors it.
        XCTAssertEqual(Double(up[16]), 3 - expected, accuracy: 1e-6)
    }
}
