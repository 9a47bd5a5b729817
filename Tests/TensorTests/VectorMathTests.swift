import XCTest
@testable import Tensor
#if canImport(Glibc)
import Glibc
#endif

final class VectorMathTests: XCTestCase {
    func testVexpAgainstLibm() {
        var worstExp: Float = 0
        var x: Float = -87
        while x < 88 {
            let v = Float8((0..<8).map { x + Float($0) * 0.0137 })
            let e = vexp(v)
            for i in 0..<8 {
                worstExp = max(worstExp, abs(e[i] - expf(v[i])) / expf(v[i]))
            }
            x += 0.11
        }
        XCTAssertLessThan(worstExp, 4e-7, "vexp relative error")
        XCTAssertEqual(vexp(Float8(repeating: -200))[0], 0, accuracy: 1e-37)
        XCTAssertTrue(vexp(Float8(repeating: 200))[0].isFinite)
    }
}
