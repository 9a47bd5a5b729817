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

/// Interop with the reference implementation of the format (Python `safetensors`, the same code
/// path `safetensors.torch.load_file` uses): our files load there, theirs load here.
final class SafeTensorsInteropTests: XCTestCase {
    func python(_ script: String) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testPythonSafetensorsReadsOursAndWeReadTheirs() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stpy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let m = TinyModule()
        for (i, (_, t)) in m.namedParameters().enumerated() { for j in 0..<t.count { t.data[j] = Float(i) + Float(j) * 0.25 } }
        let ours = dir.appendingPathComponent("ours.safetensors").path
        try m.save(to: ours)
        let (s1, out1) = try python("""
        from safetensors.numpy import load_file
        d = load_file('\(ours)')
        for k in sorted(d): print(k, d[k].dtype, list(d[k].shape), float(d[k].astype('float64').sum()))
        """)
        XCTAssertEqual(s1, 0, "python3 with the safetensors package is needed (scripts/setup installs it): \(out1)")
        for (k, t) in m.namedParameters() {
            let sum = t.scalars.reduce(0.0) { $0 + Double($1) }
            XCTAssertTrue(out1.contains("\(k) float32 \(t.shape) \(sum)"), "\(k): \(out1)")
        }
        XCTAssertTrue(out1.contains("ptr int64 [1] 7.0"), out1)
        let theirs = dir.appendingPathComponent("theirs.safetensors").path
        let (s2, out2) = try python("""
        import numpy as np
        from safetensors.numpy import save_file
        save_file({'a.weight': np.arange(12, dtype=np.float32).reshape(4, 3), 'a.bias': np.full(4, 0.5, np.float32),
                   'norm.weight': np.ones(4, np.float32), 'norm.bias': np.zeros(4, np.float32), 'ptr': np.array([3], np.int64)}, '\(theirs)')
        """)
        XCTAssertEqual(s2, 0, out2)
        let m2 = TinyModule()
        let r = try m2.load(from: SafeTensorsFile(path: theirs))
        XCTAssertTrue(r.isClean, r.summary)
        XCTAssertEqual(m2.a.weight.scalars, (0..<12).map(Float.init))
        XCTAssertEqual(m2.a.bias!.scalars, [0.5, 0.5, 0.5, 0.5])
        XCTAssertEqual(m2.ptr.value.values, [3])
    }
}
