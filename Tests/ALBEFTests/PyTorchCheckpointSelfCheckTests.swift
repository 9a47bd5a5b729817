import Foundation
import XCTest
@testable import ALBEF
@testable import ALBEFSelfCheck
@testable import NN

/// The `pytorch-checkpoints` selfcheck on `../shared/fixtures/pth-visible`, and on edited copies
/// of it standing in for held-out variants (a file that must be refused; a name it cannot produce).
final class PyTorchCheckpointSelfCheckTests: XCTestCase {
    let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../shared/fixtures/pth-visible").standardized

    func requireFixture() throws {
        guard FileManager.default.fileExists(atPath: fixture.appendingPathComponent("fixture.json").path) else { throw XCTSkip("no \(fixture.path)") }
    }

    /// A copy of the fixture with `evil.pth` (these bytes) marked `must_refuse`.
    func copy(evil: [UInt8]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pthcheck-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        for f in ["albef_micro.pth", "bert_legacy.bin", "deit_tiny.pth", "expected.safetensors"] {
            try FileManager.default.copyItem(at: fixture.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        try Data(evil).write(to: dir.appendingPathComponent("evil.pth"))
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: fixture.appendingPathComponent("fixture.json"))) as! [String: Any]
        var files = json["files"] as! [String: Any]
        files["evil.pth"] = ["bytes": evil.count, "must_refuse": true]
        json["files"] = files
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("fixture.json"))
        return dir
    }

    func testVisibleFixturePasses() throws {
        try requireFixture()
        let report = SelfCheckReport(echo: false)
        try PyTorchCheckpointSelfCheck.run(directory: fixture, report: report)
        for f in report.failures { XCTFail(f.line) }
        XCTAssertTrue(report.passed, report.verdict)
        XCTAssertGreaterThanOrEqual(report.comparisons.count, 27)
        XCTAssertTrue(report.comparisons.contains { $0.name.hasPrefix("tensors optim/* bit-exact") && $0.name.contains("(393/393)") })
    }

    func testAFileThatMustBeRefusedIsRefused() throws {
        try requireFixture()
        // pickle protocol 2: posix.system('id') — Python would run the command.
        let evil: [UInt8] = [0x80, 0x02, 0x63] + Array("posix\nsystem\n".utf8) + [0x58, 2, 0, 0, 0] + Array("id".utf8) + [0x85, 0x52, 0x2E]
        let report = SelfCheckReport(echo: false)
        try PyTorchCheckpointSelfCheck.run(directory: try copy(evil: evil), report: report)
        XCTAssertTrue(report.passed, report.verdict)
        XCTAssertTrue(report.comparisons.contains { $0.name == "refuse evil.pth" })
        XCTAssertTrue(report.notes.contains { $0.contains("'posix.system'") }, "\(report.notes)")
    }

    func testAHarmlessFileMarkedMustRefuseFails() throws {
        try requireFixture()
        let plain = try [UInt8](Data(contentsOf: fixture.appendingPathComponent("deit_tiny.pth")))
        let report = SelfCheckReport(echo: false)
        try PyTorchCheckpointSelfCheck.run(directory: try copy(evil: plain), report: report)
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.failures.map(\.name), ["refuse evil.pth (it loaded)"])
    }
}
