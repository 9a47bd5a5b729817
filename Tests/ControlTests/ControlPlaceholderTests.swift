import XCTest
@testable import Control

final class ControlPlaceholderTests: XCTestCase {
    func testTargetLinks() { XCTAssertTrue(true) }
}
