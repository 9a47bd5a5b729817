import Distributed
import Foundation
import XCTest
@testable import Training

/// The TensorBoard event file: TFRecord framing with CRC-32C, and `tensorboard.Event` protos that
/// `protoc` (an independent decoder) reads back as the scalars `metrics.jsonl` holds.
final class TensorBoardTests: XCTestCase {
    func testCRC32CKnownVectors() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)  // the standard check value
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)  // RFC 3720 B.4
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
    }

    func testTrainingWritesEventsProtocDecodes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tb-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let comm = LocalWorld(size: 1).communicators()[0]
        let t = try Trainer(config: TrainConfig.testMicro(), comm: comm, seed: 1)
        var o = RunOptions(); o.outputDir = dir; o.maxSteps = 4; o.logEvery = 2
        try TrainingRun(trainer: t, source: SyntheticSource(SyntheticBatches(batchSize: 4, length: 6, imageRes: 32, vocabSize: 1200, seed: 1),
                                                            rank: 0, iterationsPerEpoch: 10), options: o).run()
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/tensorboard")
        XCTAssertEqual(files.count, 1)
        XCTAssertTrue(files[0].hasPrefix("events.out.tfevents."), files[0])
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/tensorboard/" + files[0])))
        let records = try XCTUnwrap(TFRecord.records(bytes), "framing or checksums do not match")
        XCTAssertEqual(records.count, 4, "the version event, then steps 1, 2, 4")

        // Decode each payload with protoc against the fields of tensorboard's event.proto / summary.proto.
        let schema = dir + "/schema"
        try FileManager.default.createDirectory(atPath: schema, withIntermediateDirectories: true)
        try """
        syntax = "proto3";
        package tensorboard;
        message Summary { message Value { string tag = 1; oneof value { float simple_value = 2; } } repeated Value value = 1; }
        message Event { double wall_time = 1; int64 step = 2; oneof what { string file_version = 3; Summary summary = 5; } }
        """.write(toFile: schema + "/event.proto", atomically: true, encoding: .utf8)
        func decode(_ i: Int) throws -> String {
            let path = dir + "/record\(i).bin"
            try Data(records[i]).write(to: URL(fileURLWithPath: path))
            let (status, out) = try runCommand("/bin/sh", ["-c", "protoc --proto_path=\(schema) --decode=tensorboard.Event \(schema)/event.proto < \(path)"])
            XCTAssertEqual(status, 0, out)
            return out
        }
        XCTAssertTrue(try decode(0).contains("file_version: \"brain.Event:2\""))
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        for (i, line) in lines.enumerated() {
            let m = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let text = try decode(i + 1)
            XCTAssertTrue(text.contains("step: \(m["step"] as! Int)\n"), text)
            // protoc prints each float with 9 significant digits, which round-trips a Float.
            var values: [String: Float] = [:]
            let rows = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            for (j, row) in rows.enumerated() where row.hasPrefix("tag: \"") && j + 1 < rows.count && rows[j + 1].hasPrefix("simple_value: ") {
                values[String(row.dropFirst(6).dropLast())] = Float(rows[j + 1].dropFirst(14))
            }
            XCTAssertEqual(values.count, 13, text)
            for (tag, key) in [("loss/total", "loss"), ("loss/ita", "loss_ita"), ("loss/itm", "loss_itm"), ("loss/mlm", "loss_mlm"),
                               ("lr", "lr"), ("alpha", "alpha"), ("temp", "temp"), ("throughput/samples_per_s", "samples_per_s")] {
                XCTAssertEqual(values[tag], Float(m[key] as! Double), "\(tag) in\n\(text)")
            }
        }
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any])["temp"] as? Double ?? 0,
                       Double(Float(0.07)), accuracy: 1e-3, "the first step's temperature is the config's")

        // A flipped byte is caught by the checksums.
        var torn = bytes
        torn[bytes.count / 2] ^= 0x40
        XCTAssertNil(TFRecord.records(torn))
        XCTAssertNil(TFRecord.records(Array(bytes.dropLast(3))))
    }
}
