import Foundation
import XCTest
import Tensor
@testable import DataPipeline

/// Every bad-input kind: skipped, counted per kind, logged, quarantined, and fatal past the limit.
/// Fixture: `Fixtures/webdataset/bad.tar` (see `make_shards.py`).
final class BadInputTests: XCTestCase {
    func tokenizer() throws -> BertTokenizer {
        try BertTokenizer(vocabularyURL: fixturesURL().appendingPathComponent("tokenizer-visible/vocab.txt"))
    }

    func config(_ quarantine: URL?) -> DataLoader.Configuration {
        var c = DataLoader.Configuration(batchSize: 1, imageSize: 8)
        c.maxBadFraction = 0.9
        c.quarantineFile = quarantine
        c.log = { _ in }
        return c
    }

    func testEveryKindInTarIsSkippedCountedAndQuarantined() throws {
        let tmp = try makeTempDirectory(self)
        let index = try CorpusIndex.build(spec: fixturesURL().appendingPathComponent("webdataset/bad.tar").path)
        let q = tmp.appendingPathComponent("quarantine.jsonl")
        let logged = Locked<[String]>([])
        var c = config(q)
        c.log = { line in logged.with { $0.append(line) } }
        let l = try DataLoader(index: index, tokenizer: tokenizer(), configuration: c,
                               ranges: FixedRangeSource([SampleRange(shard: 0, start: 0, end: index.shards[0].samples)]))
        var keys: [String] = []
        while let b = try l.next() { keys += b.keys }
        XCTAssertEqual(keys, ["ok", "last"])
        let st = l.statistics
        XCTAssertEqual(st.seen, 10)
        XCTAssertEqual(st.bad, 8)
        XCTAssertEqual(st.badByKind, [.missingCaption: 1, .missingImage: 1, .emptyCaption: 1, .nonUTF8Caption: 1,
                                      .overlongCaption: 1, .truncatedImage: 1, .unknownImageFormat: 1, .duplicateKey: 1])
        let lines = try String(contentsOf: q, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 8)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
        XCTAssertEqual(first["shard"] as? String, "bad.tar")
        XCTAssertEqual(first["key"] as? String, "nocap")
        XCTAssertEqual(first["kind"] as? String, "missing_caption")
        XCTAssertEqual(logged.with { $0.count }, 8)
        XCTAssertTrue(logged.with { $0.contains { $0.contains("bad.tar:garbage") && $0.contains("unknown_image_format") } })
    }

    func testStaticPlanExcludesIndexKnownBadAndSkipsDecodeFailures() throws {
        let index = try CorpusIndex.build(spec: fixturesURL().appendingPathComponent("webdataset/bad.tar").path)
        var c = config(nil)
        c.workers = 1
        let l = try DataLoader(index: index, tokenizer: tokenizer(), configuration: c, rank: 0, worldSize: 1, epoch: 0)
        var keys: [String] = []
        while let b = try l.next() { keys += b.keys }
        // 10 groups, 6 bad in the index → 4 in the plan (ok, corrupt, garbage, last), 2 fail to decode;
        // the sequence is not wrapped around to fill the 4 planned batches of 1 (that would train
        // samples twice in the epoch): the epoch ends after the 2 good ones.
        XCTAssertEqual(l.batchesPerEpoch, 4)
        XCTAssertEqual(try DataLoader.batchesPerEpoch(index: index, configuration: c, worldSize: 1), 4)
        XCTAssertEqual(keys, ["ok", "last"])
        XCTAssertEqual(l.statistics.excludedByIndex, 6)
        XCTAssertEqual(l.statistics.badByKind[.truncatedImage, default: 0] + l.statistics.badByKind[.unknownImageFormat, default: 0], l.statistics.bad)
    }

    func testTooManyBadSamplesThrowsClearError() throws {
        let index = try CorpusIndex.build(spec: fixturesURL().appendingPathComponent("webdataset/bad.tar").path)
        var c = config(nil)
        c.maxBadFraction = 0.1
        // The index alone already exceeds 10 %.
        XCTAssertThrowsError(try DataLoader(index: index, tokenizer: tokenizer(), configuration: c, rank: 0, worldSize: 1, epoch: 0)) {
            XCTAssertTrue("\($0)".contains("too many bad samples"))
        }
        c.minSamplesForBadFraction = 5
        let l = try DataLoader(index: index, tokenizer: tokenizer(), configuration: c,
                               ranges: FixedRangeSource([SampleRange(shard: 0, start: 0, end: 10)]))
        XCTAssertThrowsError(try { while try l.next() != nil {} }()) { e in
            guard case DataError.tooManyBadSamples(let bad, let seen, _, _) = e else { return XCTFail("\(e)") }
            XCTAssertGreaterThan(Double(bad) / Double(seen), 0.1)
            XCTAssertTrue("\(e)".contains("HINT"))
        }
    }

    func testMissingFileAndBadCaptionsInJSONCorpus() throws {
        let tmp = try makeTempDirectory(self)
        let jpg = try JPEGEncoder.encode(RGBImage(width: 8, height: 8, fill: 90))
        try Data(jpg).write(to: tmp.appendingPathComponent("a.jpg"))
        var broken = jpg
        let sof = broken.indices.dropLast().first { broken[$0] == 0xFF && broken[$0 + 1] == 0xC0 }!
        for i in (sof + 5)..<(sof + 9) { broken[i] = 0 }
        try Data(broken).write(to: tmp.appendingPathComponent("broken.jpg"))
        let entries: [AnnotationFile.Entry] = [
            .init(image: "a.jpg", captions: ["fine"]), .init(image: "gone.jpg", captions: ["missing image"]),
            .init(image: "a.jpg", captions: [String(repeating: "x", count: 10_001)]), .init(image: "a.jpg", captions: ["   "]),
            .init(image: "broken.jpg", captions: ["header says 0x0"]),
        ]
        try AnnotationFile.write(entries, to: tmp.appendingPathComponent("ann.json"), listCaptions: true)
        let index = try CorpusIndex.build(spec: tmp.appendingPathComponent("ann.json").path)
        XCTAssertEqual(index.shards[0].bad.map(\.kind), ["missing_file", "overlong_caption", "empty_caption"])
        let l = try DataLoader(index: index, tokenizer: tokenizer(), configuration: config(nil),
                               ranges: FixedRangeSource([SampleRange(shard: 0, start: 0, end: 5)]))
        var n = 0
        while let b = try l.next() { n += b.batchSize }
        XCTAssertEqual(n, 1)
        XCTAssertEqual(l.statistics.badByKind, [.missingFile: 1, .overlongCaption: 1, .emptyCaption: 1, .corruptImage: 1])
        // A broken annotation file is a clear error naming it.
        try Data("{not json".utf8).write(to: tmp.appendingPathComponent("broken.json"))
        XCTAssertThrowsError(try CorpusIndex.build(spec: tmp.appendingPathComponent("broken.json").path)) {
            XCTAssertTrue("\($0)".contains("broken.json"))
        }
    }
}
