import XCTest
@testable import NN

final class NNPlaceholderTests: XCTestCase {
    func testTargetLinks() { XCTAssertTrue(true) }
}
