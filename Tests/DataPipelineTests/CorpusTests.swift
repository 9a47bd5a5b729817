import Foundation
import XCTest
@testable import DataPipeline

/// Fixtures: `Fixtures/webdataset/{good,bad,gnu}.tar`, made once by `make_shards.py` with the
/// Python `webdataset` package and `tarfile`; `expected.json` holds the keys, captions and colours.
final class CorpusTests: XCTestCase {
    let dir = fixturesURL().appendingPathComponent("webdataset")
    func expected() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("expected.json"))) as! [String: Any]
    }

    func testReadsShardWrittenByWebdataset() throws {
        let exp = try expected()
        let index = try CorpusIndex.build(spec: dir.path + "/good.tar")
        XCTAssertEqual(index.format, .webdataset)
        XCTAssertEqual(index.shards.count, 1)
        XCTAssertEqual(index.shards[0].path, "good.tar")
        XCTAssertEqual(index.totalSamples, 5)
        XCTAssertEqual(index.badSamples, 0)
        let reader = CorpusReader(index: index)
        let keys = exp["keys"] as! [String], captions = exp["captions"] as! [String], colors = exp["colors"] as! [[Int]]
        for i in 0..<5 {
            let s = try reader.read(shard: 0, index: i)
            XCTAssertEqual(s.key, keys[i])
            XCTAssertEqual(s.captions, [captions[i]])
            let img = try ImageDecoder.decode(s.image, source: s.source)
            XCTAssertEqual(img.width, 8)
            for c in 0..<3 { XCTAssertLessThanOrEqual(abs(Int(img.at(4, 4, c)) - colors[i][c]), 6, "sample \(i)") }
        }
    }

    func testGNULongNames() throws {
        let scan = try TarFile(path: dir.path + "/gnu.tar").scan()
        XCTAssertEqual(scan.members.map(\.name), [String(repeating: "g", count: 150) + ".jpg", String(repeating: "g", count: 150) + ".txt"])
        XCTAssertNil(scan.problem)
    }

    func testBadShardKinds() throws {
        let exp = try expected()
        let index = try CorpusIndex.build(spec: dir.path + "/bad.tar")
        let keys = exp["bad_keys"] as! [String]
        XCTAssertEqual(index.shards[0].samples, keys.count)
        // Index-time kinds: structure + captions (images are decoded by the loader).
        let indexKinds = Set(index.shards[0].bad.map { "\($0.key)/\($0.kind)" })
        XCTAssertEqual(indexKinds, ["nocap/missing_caption", "noimg/missing_image", "empty/empty_caption",
                                    "latin1/non_utf8_caption", "long/overlong_caption", "ok/duplicate_key"])
        let reader = CorpusReader(index: index)
        XCTAssertEqual(try reader.read(shard: 0, index: 0).captions, ["fine caption"])
        XCTAssertEqual(try reader.read(shard: 0, index: keys.count - 1).captions, ["last good one"])
        XCTAssertThrowsError(try reader.read(shard: 0, index: 8)) { e in
            XCTAssertEqual((e as! BadSample).kind, .duplicateKey)
            XCTAssertTrue("\(e)".contains("bad.tar:ok"))
        }
    }

    func testTruncatedTarMember() throws {
        let tmp = try makeTempDirectory(self)
        let data = try Data(contentsOf: dir.appendingPathComponent("good.tar"))
        // Cut inside the data of sample003.jpg: find its header and cut 100 bytes into the data.
        let members = try TarFile(path: dir.path + "/good.tar").scan().members
        let m = members.first { $0.name == "sample003.jpg" }!
        try data.prefix(m.offset + 100).write(to: tmp.appendingPathComponent("cut.tar"))
        let index = try CorpusIndex.build(spec: tmp.path + "/cut.tar")
        XCTAssertEqual(index.shards[0].samples, 4)
        XCTAssertEqual(index.shards[0].bad, [CorpusIndex.BadEntry(key: "sample003", kind: "truncated_member")])
        let reader = CorpusReader(index: index)
        XCTAssertNoThrow(try reader.read(shard: 0, index: 2))
        XCTAssertThrowsError(try reader.read(shard: 0, index: 3)) { e in XCTAssertEqual((e as! BadSample).kind, .truncatedMember) }
    }

    func testBraceExpansion() throws {
        XCTAssertEqual(try CorpusSpec.expandBraces("d/{00008..00011}.tar"), ["d/00008.tar", "d/00009.tar", "d/00010.tar", "d/00011.tar"])
        XCTAssertEqual(try CorpusSpec.expandBraces("{a,b}/{1..2}.tar"), ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"])
        XCTAssertThrowsError(try CorpusSpec.expandBraces("d/{1..2.tar"))
        let (files, fmt) = try CorpusSpec.resolve("x/{0..1}.tar :: y.tar")
        XCTAssertEqual(files, ["x/0.tar", "x/1.tar", "y.tar"])
        XCTAssertEqual(fmt, .webdataset)
    }

    func testJSONCorpusVirtualShardsAndIndexRoundTrip() throws {
        let tmp = try makeTempDirectory(self)
        try FileManager.default.createDirectory(at: tmp.appendingPathComponent("img"), withIntermediateDirectories: true)
        let jpg = try JPEGEncoder.encode(RGBImage(width: 8, height: 8, fill: 200))
        var entries: [AnnotationFile.Entry] = []
        for i in 0..<5 {
            if i != 3 { try Data(jpg).write(to: tmp.appendingPathComponent("img/\(i).jpg")) }
            entries.append(.init(image: "img/\(i).jpg", captions: i == 4 ? ["", "second caption"] : ["caption \(i)"]))
        }
        try AnnotationFile.write(entries, to: tmp.appendingPathComponent("ann.json"), listCaptions: false)
        let index = try CorpusIndex.build(spec: tmp.path + "/ann.json", entriesPerShard: 2)
        XCTAssertEqual(index.format, .json)
        XCTAssertEqual(index.shards.map(\.path), ["ann.json#0", "ann.json#1", "ann.json#2"])
        XCTAssertEqual(index.shards.map(\.samples), [2, 2, 1])
        XCTAssertEqual(index.shards[1].bad, [CorpusIndex.BadEntry(key: "3", kind: "missing_file")])
        let reader = CorpusReader(index: index)
        XCTAssertEqual(try reader.read(shard: 1, index: 0).captions, ["caption 2"])
        XCTAssertEqual(try reader.read(shard: 2, index: 0).captions, ["second caption"])
        XCTAssertThrowsError(try reader.read(shard: 1, index: 1)) { e in XCTAssertEqual((e as! BadSample).kind, .missingFile) }
        // Save / load keeps the contract's field names.
        let url = tmp.appendingPathComponent("index.json")
        try index.save(url)
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        XCTAssertEqual(Set(obj.keys), ["version", "format", "root", "shards", "total_samples", "bad_samples"])
        XCTAssertEqual(Set((obj["shards"] as! [[String: Any]])[0].keys), ["path", "samples", "bytes", "bad"])
        XCTAssertEqual(try CorpusIndex.load(from: url), index)
    }
}
