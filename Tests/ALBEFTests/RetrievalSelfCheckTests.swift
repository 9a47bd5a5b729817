import Foundation
import XCTest
@testable import ALBEF
@testable import ALBEFSelfCheck
@testable import NN
@testable import Tensor

/// The `albef-retrieval-step` selfcheck (the same code as `albef-worker selfcheck`) on the
/// committed fixture, and on edited copies standing in for unseen fixtures.
final class RetrievalSelfCheckTests: XCTestCase {
    override func setUp() { Threading.setThreads(1) }

    /// A copy of the fixture with `fixture.json` edited by `edit`.
    func copy(_ edit: (inout [String: Any]) -> Void) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("retrieval-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: retrievalFixture.appendingPathComponent("fixture.safetensors"), to: dir.appendingPathComponent("fixture.safetensors"))
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: retrievalFixture.appendingPathComponent("fixture.json"))) as! [String: Any]
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("fixture.json"))
        return dir
    }

    func run(_ dir: URL) throws -> SelfCheckReport {
        let report = SelfCheckReport(echo: false)
        try RetrievalStepSelfCheck.run(directory: dir, report: report)
        return report
    }

    /// Parity with the PyTorch reference: losses, intermediates, 126 gradients, queues, momentum
    /// weights, AdamW, the score matrices and the recalls.
    func testFixtureParity() throws {
        let report = try run(retrievalFixture)
        for f in report.failures { XCTFail(f.line) }
        XCTAssertTrue(report.passed, report.verdict)
        let names = report.comparisons.map(\.name)
        XCTAssertEqual(names.filter { $0.hasPrefix("grad/") }.count, 126)
        XCTAssertEqual(names.filter { $0.hasPrefix("after_adamw/") }.count, 126)
        XCTAssertEqual(names.filter { $0.hasPrefix("itm_eval/") }.count, 9)
        for required in ["after/idx_queue (exact)", "act/idx_all (exact)", "eval/score_matrix_i2t top-k sets", "eval/score_matrix_t2i top-k sets"] {
            XCTAssertTrue(names.contains { $0.hasPrefix(required) }, "missing \(required)")
        }
    }

    /// A recall the model does not produce fails, and so does a metric name it cannot produce.
    func testWrongOrUnknownRecallsFail() throws {
        let wrong = try run(try copy { json in
            var ev = json["eval"] as! [String: Any]
            var m = ev["itm_eval"] as! [String: Any]
            m["img_r1"] = 20.0
            m["not_a_metric"] = 1.0
            ev["itm_eval"] = m
            json["eval"] = ev
        })
        XCTAssertFalse(wrong.passed)
        XCTAssertEqual(Set(wrong.failures.map(\.name).map { String($0.prefix(while: { $0 != " " })) }),
                       ["itm_eval/img_r1", "itm_eval/not_a_metric"])
    }

    /// k_test comes from the fixture: a smaller k gives other top-k sets, which fail exactly there.
    func testKTestIsReadFromTheFixture() throws {
        let report = try run(try copy { json in
            var ev = json["eval"] as! [String: Any]
            ev["k_test"] = 3
            json["eval"] = ev
        })
        let failed = Set(report.failures.map(\.name).filter { $0.contains("top-k sets") })
        XCTAssertEqual(failed.count, 2, "\(report.failures.map(\.name))")
    }

    /// The manifest must describe the file: a shape or a tensor it gets wrong fails.
    func testManifestMismatchFails() throws {
        let report = try run(try copy { json in
            var t = json["tensors"] as! [String: Any]
            t["batch/idx"] = ["shape": [5], "dtype": "int64"]
            t["expected/not_in_the_file"] = ["shape": [1], "dtype": "float32"]
            json["tensors"] = t
        })
        XCTAssertEqual(report.failures.map(\.name).filter { $0.hasPrefix("manifest") }.count, 1)
        XCTAssertFalse(report.passed)
    }

    /// A wrong momentum pairing in the fixture (two pairs swapped) is detected.
    func testMomentumPairOrderIsChecked() throws {
        let report = try run(try copy { json in
            var pairs = json["momentum_pairs"] as! [[String]]
            pairs.swapAt(0, 1)
            json["momentum_pairs"] = pairs
        })
        XCTAssertEqual(report.failures.map(\.name).filter { $0.hasPrefix("momentum_pairs") }.count, 1)
    }
}

/// `itm_eval`'s recalls on hand-made score matrices.
final class RetrievalRecallTests: XCTestCase {
    func testRecallsOnAHandMadeExample() {
        // 2 images, 3 captions: image 0 has captions 0 and 1, image 1 has caption 2.
        let i2t: [Float] = [0.1, 0.9, -100,     // image 0: caption 1 first → rank 0
                            0.8, 0.5, 0.2]      // image 1: caption 2 last → rank 2
        let t2i: [Float] = [0.3, 0.7,           // caption 0 → image 0 at rank 1
                            0.9, -100,          // caption 1 → rank 0
                            -100, -100]         // caption 2 → tie with a non-target: rank 1 (the worst order)
        let r = RetrievalRecall(scoreI2T: i2t, scoreT2I: t2i, imageToTexts: [[0, 1], [2]], textToImage: [0, 0, 1])
        XCTAssertEqual(r.txtR1, 50); XCTAssertEqual(r.txtR5, 100); XCTAssertEqual(r.txtR10, 100)
        XCTAssertEqual(r.imgR1, 100.0 / 3); XCTAssertEqual(r.imgR5, 100)
        XCTAssertEqual(RetrievalRecall.rank([-100, -100, -100, 0.5], of: [1, 2]), 2, "the higher entry, then the equal non-target, then the tied targets")
        XCTAssertEqual(r.txtRMean, (50.0 + 100 + 100) / 3)
        XCTAssertEqual(r.rMean, (r.txtRMean + r.imgRMean) / 2)
        // An image without captions is never a hit.
        let none = RetrievalRecall(scoreI2T: [0.5, 0.1], scoreT2I: [0.5, 0.4], imageToTexts: [[0], []], textToImage: [0])
        XCTAssertEqual(none.txtR10, 50)
    }

    /// Top-k is torch.topk: the k largest, descending, ties to the lower index.
    func testTopK() {
        XCTAssertEqual(RetrievalScoreMatrices.topK([0.2, 0.9, 0.2, 0.5], 3), [1, 3, 0])
    }
}
