import XCTest
@testable import Distributed

final class DistributedPlaceholderTests: XCTestCase {
    func testTargetLinks() { XCTAssertTrue(true) }
}
