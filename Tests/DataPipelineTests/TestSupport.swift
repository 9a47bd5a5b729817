import Foundation
import XCTest

/// The `Fixtures` folder copied into the test bundle.
func fixturesURL() -> URL {
    Bundle.module.resourceURL!.appendingPathComponent("Fixtures")
}

/// A fresh temporary directory, removed by the caller's `addTeardownBlock`.
func makeTempDirectory(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("albef-data-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}
