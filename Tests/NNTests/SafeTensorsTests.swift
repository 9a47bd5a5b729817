import Foundation
import XCTest
@testable import NN
@testable import Tensor

final class TinyModule: Module {
    let a = Linear(3, 4)
    let n = LayerNorm(4, eps: 1e-5)
    let ptr = IntBuffer(IntTensor([7], shape: [1]))
    override var children: [(String, Module)] { [("a", a), ("norm", n)] }
    override var localBuffers: [(String, StateEntry)] { [("ptr", .int(ptr))] }
}

final class SafeTensorsTests: XCTestCase {
    var dir: URL!
    override func setUp() {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func testRoundTripIsBitIdentical() throws {
        let m = TinyModule()
        var rng = RandomGenerator(seed: 1)
        for (_, t) in m.namedParameters() { for i in 0..<t.count { t.data[i] = rng.normal() } }
        let path = dir.appendingPathComponent("m.safetensors").path
        try m.save(to: path, metadata: ["step": "3"])
        let m2 = TinyModule()
        let report = try m2.load(from: SafeTensorsFile(path: path))
        XCTAssertTrue(report.isClean, report.summary)
        for ((k, a), (_, b)) in zip(m.namedParameters(), m2.namedParameters()) { XCTAssertEqual(a.scalars, b.scalars, k) }
        XCTAssertEqual(m2.ptr.value.values, [7])
        XCTAssertEqual(try SafeTensorsFile(path: path).metadata["step"], "3")
        XCTAssertEqual(try SafeTensorsFile(path: path).entries["ptr"]?.dtype, "I64")
    }

    func testWrongShapeNamesTheKey() throws {
        let t = Tensor(zeros: [5, 3])
        let path = dir.appendingPathComponent("bad.safetensors").path
        try SafeTensorsFile.write([("a.weight", .float(t))], to: path)
        XCTAssertThrowsError(try TinyModule().load(from: SafeTensorsFile(path: path))) { e in
            XCTAssertTrue("\(e)".contains("a.weight"), "\(e)")
            XCTAssertTrue("\(e)".contains("[5, 3]"), "\(e)")
        }
        // Non-strict: the report lists it, and the missing keys.
        let r = try TinyModule().load(from: SafeTensorsFile(path: path), strict: false)
        XCTAssertEqual(r.shapeMismatches.first?.key, "a.weight")
        XCTAssertTrue(r.missing.contains("a.bias"))
    }

    func testTruncatedFilesGiveByteOffsets() throws {
        let m = TinyModule()
        let path = dir.appendingPathComponent("m.safetensors").path
        try m.save(to: path)
        let full = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = dir.appendingPathComponent("cut.safetensors").path
        try full.prefix(20).write(to: URL(fileURLWithPath: cut))
        XCTAssertThrowsError(try SafeTensorsFile(path: cut)) { XCTAssertTrue("\($0)".contains("byte 0"), "\($0)") }
        try full.prefix(full.count - 8).write(to: URL(fileURLWithPath: cut))
        XCTAssertThrowsError(try SafeTensorsFile(path: cut)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: cut))
        XCTAssertThrowsError(try SafeTensorsFile(path: cut))
    }

    func testReadsHalfPrecisionAndBF16() throws {
        // header for F16 [2] = [1.0, -2.0] and BF16 [1] = [0.5]
        let header = #"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}"#
        var d = Data()
        var n = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(contentsOf: Array(header.utf8))
        d.append(contentsOf: [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x3F])
        let path = dir.appendingPathComponent("h.safetensors").path
        try d.write(to: URL(fileURLWithPath: path))
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(try f.floats("h"), [1, -2])
        XCTAssertEqual(try f.floats("b"), [0.5])
    }
}
