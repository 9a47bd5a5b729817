import XCTest
@testable import ALBEF

final class ALBEFPlaceholderTests: XCTestCase {
    func testTargetLinks() { XCTAssertTrue(true) }
}
