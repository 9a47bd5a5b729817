import XCTest
@testable import DataPipeline

final class DataPipelinePlaceholderTests: XCTestCase {
    func testTargetLinks() { XCTAssertTrue(true) }
}
