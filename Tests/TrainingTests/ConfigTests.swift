import Foundation
import XCTest
@testable import ALBEF
@testable import Training

final class ConfigTests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized

    func testCommittedConfigsLoad() throws {
        let base = try TrainConfig.load(root.path + "/configs/base.yaml")
        XCTAssertEqual(base.model.bert.hiddenSize, 768)
        XCTAssertEqual(base.model.bert.fusionLayer, 6)
        XCTAssertEqual(base.model.queueSize, 65536)
        XCTAssertEqual(base.batchSize, 64)
        XCTAssertEqual(base.schedule, .albef(baseLR: 1e-4, warmupLR: 1e-5, minLR: 1e-5, warmupEpochs: 20, stepSize: 100, epochs: 30))
        XCTAssertEqual(base.trainFiles.count, 6)
        let tiny = try TrainConfig.load(root.path + "/configs/tiny.yaml")
        XCTAssertEqual(tiny.model.visionWidth, 256)
        XCTAssertEqual(tiny.model.vitDepth, 4)
        XCTAssertEqual(tiny.model.imageRes, 64)
        let small = try TrainConfig.load(root.path + "/configs/small.yaml")
        XCTAssertEqual(small.model.bert.hiddenSize, 384)
        XCTAssertNotNil(small.textInit)
        _ = try TrainConfig.load(root.path + "/configs/quickstart.yaml")
    }

    func write(_ text: String) throws -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString).yaml").path
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func testWrongTypesAndValuesAreNamed() throws {
        let p1 = try write("batch_size: sixteen\n")
        XCTAssertThrowsError(try TrainConfig.load(p1)) { e in
            XCTAssertTrue("\(e)".contains("batch_size") && "\(e)".contains(p1), "\(e)")
        }
        let p2 = try write("optimizer: {opt: sgd, lr: 0.1}\n")
        XCTAssertThrowsError(try TrainConfig.load(p2)) { XCTAssertTrue("\($0)".contains("optimizer.opt"), "\($0)") }
        let p3 = try write("vit: 3\n")
        XCTAssertThrowsError(try TrainConfig.load(p3)) { XCTAssertTrue("\($0)".contains("'vit'"), "\($0)") }
        let p4 = try write("bert_config: missing.json\n")
        XCTAssertThrowsError(try TrainConfig.load(p4)) { XCTAssertTrue("\($0)".contains("missing.json"), "\($0)") }
        let p5 = try write("bert: {hidden_size: 30, num_attention_heads: 4}\nvision_width: 30\n")
        XCTAssertThrowsError(try TrainConfig.load(p5)) { XCTAssertTrue("\($0)".contains("hidden_size"), "\($0)") }
        let p6 = try write("batch_size: 1\n")
        XCTAssertThrowsError(try TrainConfig.load(p6)) { XCTAssertTrue("\($0)".contains("batch_size"), "\($0)") }
    }
}
