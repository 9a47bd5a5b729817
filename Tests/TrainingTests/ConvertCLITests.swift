import Foundation
import XCTest
@testable import NN

/// `albef-worker convert` on the pth-visible fixture's files: key report and a safetensors file
/// holding every tensor in its stored dtype.
final class ConvertCLITests: XCTestCase {
    let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../shared/fixtures/pth-visible").standardized

    func testConvertReportsKeysAndWritesEveryTensor() throws {
        guard FileManager.default.fileExists(atPath: fixture.appendingPathComponent("fixture.json").path) else { throw XCTSkip("no \(fixture.path)") }
        let exe = productsDirectory().appendingPathComponent("albef-worker").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("convert-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let input = fixture.appendingPathComponent("albef_micro.pth").path
        let (status, log) = try runCommand(exe, ["convert", input, out, "--key", "model"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("zip format, 657 storages"), log)
        XCTAssertTrue(log.contains("top-level keys: model (dict[268]), optimizer (dict[2]), lr_scheduler (dict[19]), config (dict[20]), epoch (3)"), log)
        XCTAssertTrue(log.contains("state dict: 'model', 268 tensors"), log)
        XCTAssertTrue(log.contains("shared storage: text_encoder.bert.embeddings.word_embeddings.weight = text_encoder.cls.predictions.decoder.weight"), log)
        let st = try SafeTensorsFile(path: out)
        XCTAssertEqual(st.keys.count, 268)
        XCTAssertEqual(st.entries["queue_ptr"]?.dtype, "I64")
        let expected = try SafeTensorsFile(path: fixture.appendingPathComponent("expected.safetensors").path)
        for k in st.keys {
            XCTAssertEqual(st.entries[k]!.shape, expected.entries["albef/" + k]!.shape, k)
            XCTAssertEqual(try st.floats(k).map(\.bitPattern), try expected.floats("albef/" + k).map(\.bitPattern), k)
        }
        // A refusal or a damaged file is a non-zero exit with the reason.
        let bad = out + ".pth"
        try Data([0x80, 0x02, 0x63] + Array("os\nsystem\n".utf8) + [0x29, 0x52, 0x2E]).write(to: URL(fileURLWithPath: bad))
        defer { try? FileManager.default.removeItem(atPath: bad) }
        let (s2, log2) = try runCommand(exe, ["convert", bad, out + ".2"])
        XCTAssertNotEqual(s2, 0)
        XCTAssertTrue(log2.contains("refused") && log2.contains("'os.system'"), log2)
    }
}
