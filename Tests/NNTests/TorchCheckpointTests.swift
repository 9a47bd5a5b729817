import Foundation
import XCTest
@testable import NN
@testable import Tensor

/// The PyTorch checkpoint reader on files made by `scripts/fixtures/make_torchlike_checkpoints.py`
/// (Python's own pickle with stand-in torch globals; no torch needed): views, dtypes, sharing,
/// both containers, forbidden globals, truncation and damage.
final class TorchCheckpointTests: XCTestCase {
    var dir: URL!
    var expected: [String: Any] = [:]

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("pth-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../scripts/fixtures/make_torchlike_checkpoints.py").standardized.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, dir.path]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "the generator failed")
        let data = try Data(contentsOf: dir.appendingPathComponent("expected.json"))
        expected = try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }
    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    static let kinds: [String: TorchDType] = ["Float": .float32, "Half": .float16, "BFloat16": .bfloat16, "Double": .float64, "Long": .int64]

    func checkViews(_ name: String, format: String) throws {
        let sd = try TorchStateDict(path: path(name))
        XCTAssertEqual(sd.checkpoint.format, format)
        XCTAssertEqual(sd.foundAt, "model")
        let tensors = expected["tensors"] as! [String: [String: Any]]
        XCTAssertEqual(Set(sd.keys), Set(tensors.keys), "module. prefix stripped, gamma/beta renamed")
        for (k, e) in tensors {
            let t = try XCTUnwrap(sd.tensors[k], k)
            XCTAssertEqual(t.dtype, Self.kinds[e["dtype"] as! String], k)
            XCTAssertEqual(t.shape, e["shape"] as! [Int], k)
            let hex = t.contiguousBytes().map { String(format: "%02x", $0) }.joined()
            XCTAssertEqual(hex, e["hex"] as! String, "\(name) \(k): bytes after applying offset and strides")
        }
        // Views of one storage stay one storage (tied weights).
        XCTAssertTrue(sd.tensors["enc.weight"]!.storage === sd.tensors["enc.weight_t"]!.storage)
        XCTAssertFalse(sd.tensors["enc.weight_t"]!.isContiguous)
        // Conversions to float32 are exact.
        XCTAssertEqual(try sd.floats("half"), [-2.25, 65504, Float(Float16(6.1e-05)), 0, -0])
        XCTAssertEqual(try sd.floats("bf"), [1, -3.140625, Float(bitPattern: 0x7149_F2CA & 0xFFFF_0000), Float(bitPattern: 0x0D80_0000)])
        XCTAssertEqual(try sd.floats("dbl"), [Float(1.0 / 3), Float(-2.5e-8), Float(12345.678901234)])
        XCTAssertEqual(try sd.ints("ids").values, [0, 1, 2, -7, 1 << 40])
        XCTAssertEqual(try sd.floats("enc.cols"), [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23].map { 0.5 * Float($0) - 3 })
        XCTAssertEqual(try sd.floats("scalar"), [-0.5])
        XCTAssertEqual(sd.shape(of: "scalar"), [])
        // Non-tensor values.
        let ck = sd.checkpoint
        XCTAssertEqual(ck.value(at: "epoch")?.int, 7)
        XCTAssertEqual(ck.value(at: "config/name")?.string, "café")
        XCTAssertEqual(ck.value(at: "config/big")?.int, 1 << 40)
        XCTAssertEqual(ck.value(at: "config/lr")?.double, 1e-05)
        XCTAssertEqual(ck.value(at: "config")?.repr, "{'lr': 1e-05, 'betas': (0.9, 0.999), 'name': 'café', 'big': 1099511627776, 'neg': -3, 'flags': [True, False, None]}")
    }

    func testZipCheckpointViewsDTypesAndSharing() throws { try checkViews("views.pth", format: "zip") }
    func testLegacyCheckpointViewsDTypesAndSharing() throws { try checkViews("views_legacy.bin", format: "legacy") }

    func testConvertedSafeTensorsKeepDTypesAndValues() throws {
        for name in ["views.pth", "views_legacy.bin"] {
            let sd = try TorchStateDict(path: path(name))
            let out = path(name + ".safetensors")
            try sd.writeSafeTensors(to: out)
            let st = try SafeTensorsFile(path: out)
            XCTAssertEqual(st.keys, sd.keys)
            for k in sd.keys {
                XCTAssertEqual(st.entries[k]!.dtype, sd.dtype(of: k), k)
                XCTAssertEqual(st.entries[k]!.shape, sd.shape(of: k), k)
                XCTAssertEqual(try st.floats(k).map(\.bitPattern), try sd.floats(k).map(\.bitPattern), k)
            }
        }
    }

    func testForbiddenGlobalsAreRefusedAndNothingRuns() throws {
        for (name, global) in [("evil_system.pth", "posix.system"), ("evil_eval.pth", "builtins.eval"), ("evil_reconstructor.pth", "copy_reg._reconstructor")] {
            XCTAssertThrowsError(try TorchCheckpoint(path: path(name)), name) { e in
                guard case let TorchCheckpointError.forbiddenGlobal(p, g, _) = e else { return XCTFail("\(name): \(e)") }
                XCTAssertEqual(p, path(name))
                XCTAssertEqual(g, global)
                XCTAssertTrue("\(e)".contains("Nothing was executed"), "\(e)")
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("PWNED")))
    }

    func testTruncatedFilesAreClearErrorsNamingTheFile() throws {
        for name in ["views.pth", "views_legacy.bin"] {
            let full = try Data(contentsOf: URL(fileURLWithPath: path(name)))
            let cuts = [0, 1, 4, 10, 29, 64, 100, full.count / 4, full.count / 2, full.count - 200, full.count - 98, full.count - 22, full.count - 5, full.count - 1]
            for cut in Set(cuts) where cut >= 0 && cut < full.count {
                let p = path("cut-\(cut)-" + name)
                try full.prefix(cut).write(to: URL(fileURLWithPath: p))
                XCTAssertThrowsError(try TorchStateDict(path: p), "\(name) cut at \(cut)") { e in
                    guard let te = e as? TorchCheckpointError else { return XCTFail("\(name) cut at \(cut): \(e)") }
                    XCTAssertFalse(te.isRefusal)
                    XCTAssertTrue("\(e)".hasPrefix(p + ":"), "\(e)")
                }
            }
        }
        XCTAssertThrowsError(try TorchCheckpoint(path: path("absent.pth"))) { XCTAssertTrue("\($0)".contains("file not found")) }
    }

    /// Every single-byte change of either file either loads or is a `TorchCheckpointError`.
    func testDamagedBytesNeverCrash() throws {
        for name in ["views.pth", "views_legacy.bin"] {
            let full = try Data(contentsOf: URL(fileURLWithPath: path(name)))
            var errors = 0
            for i in stride(from: 0, to: full.count, by: 3) {
                for v: UInt8 in [0x00, 0xFF, full[i] ^ 0x5A] {
                    var d = full
                    d[i] = v
                    let p = path("dmg-" + name)
                    try d.write(to: URL(fileURLWithPath: p))
                    do { _ = try TorchStateDict(path: p) } catch is TorchCheckpointError { errors += 1 }
                }
            }
            XCTAssertGreaterThan(errors, 0, name)
        }
    }

    func testUnknownOpcodeAndMissingStateDictAreErrors() throws {
        let p = path("garbage.pth")
        try Data([0x80, 0x02, 0xF0, 0x2E]).write(to: URL(fileURLWithPath: p))
        XCTAssertThrowsError(try TorchCheckpoint(path: p)) { XCTAssertTrue("\($0)".contains("neither a zip archive nor a legacy torch file"), "\($0)") }
        XCTAssertThrowsError(try TorchStateDict(path: path("views.pth"), key: "nope")) { e in
            XCTAssertTrue("\(e)".contains("no dict at key 'nope'"), "\(e)")
        }
    }
}
