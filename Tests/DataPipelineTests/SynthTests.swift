import Foundation
import XCTest
import Tensor
@testable import DataPipeline

final class SynthTests: XCTestCase {
    func testEasyCorpusLayoutUniqueHeldoutAndWholeWordCaptions() throws {
        let dir = try makeTempDirectory(self)
        var o = SyntheticCorpus.Options()
        o.samples = 120; o.shardSize = 50; o.imageSize = 32; o.heldout = 500; o.noise = 0.3; o.seed = 9
        let summary = try SyntheticCorpus(options: o).write(to: dir)
        XCTAssertEqual(summary.shards, 3)
        let combos = SceneVocabulary.colors.count * 6 * 5  // colours × shapes × positions
        XCTAssertEqual(SceneSampler.combinations, combos)
        XCTAssertEqual(summary.heldout, combos)  // clamped to the number of distinct combinations
        XCTAssertEqual(summary.chanceRecallAt1, 1.0 / Double(combos), accuracy: 1e-12)
        XCTAssertGreaterThan(summary.noisySamples, 10)
        let index = try CorpusIndex.load(from: dir.appendingPathComponent("index.json"))
        XCTAssertEqual(index.totalSamples, 120)
        XCTAssertEqual(index.badSamples, 0)
        let train = try AnnotationFile(path: dir.appendingPathComponent("train.json").path)
        XCTAssertEqual(train.entries.count, 120)
        let held = try AnnotationFile(path: dir.appendingPathComponent("heldout.json").path)
        XCTAssertEqual(held.entries.count, combos)
        let captions = held.entries.map { $0.captions[0] }
        XCTAssertEqual(Set(captions).count, combos, "held-out captions must be unique")
        // Clean captions use whole words of the BERT vocabulary.
        let tok = try BertTokenizer(vocabularyURL: fixturesURL().appendingPathComponent("tokenizer-visible/vocab.txt"))
        let reader = CorpusReader(index: index)
        var cleans = captions
        for i in 0..<40 {
            let s = try reader.read(shard: i / 50, index: i % 50)
            XCTAssertNoThrow(try ImageDecoder.decode(s.image, source: s.source))
            let tar = try TarFile(path: index.filePath(i / 50))
            let meta = WebDatasetShard(scan: try tar.scan()).entries[i % 50].json!
            let obj = try JSONSerialization.jsonObject(with: Data(try tar.read(meta))) as! [String: String]
            cleans.append(obj["clean_caption"]!)
        }
        for c in cleans {
            let words = c.split(separator: " ").map(String.init)
            XCTAssertEqual(tok.ids(c).count, words.count, "not whole words: \(c)")
            XCTAssertFalse(tok.ids(c).contains(100))
        }
        // Held-out images are distinct combinations: render check on one image.
        let img = try ImageDecoder.decode(file: URL(fileURLWithPath: held.imagePath(held.entries[0])))
        XCTAssertEqual(img.width, 32)
    }

    func testDeterministicAndHardMode() throws {
        let d1 = try makeTempDirectory(self), d2 = try makeTempDirectory(self)
        var o = SyntheticCorpus.Options()
        o.samples = 30; o.shardSize = 30; o.imageSize = 24; o.heldout = 12; o.difficulty = .hard; o.writeJSON = false
        o.threads = 1
        try SyntheticCorpus(options: o).write(to: d1)
        o.threads = 2
        try SyntheticCorpus(options: o).write(to: d2)
        let a = try Data(contentsOf: d1.appendingPathComponent("shards/00000.tar"))
        let b = try Data(contentsOf: d2.appendingPathComponent("shards/00000.tar"))
        XCTAssertEqual(a, b)
        let held = try AnnotationFile(path: d1.appendingPathComponent("heldout.json").path)
        XCTAssertEqual(Set(held.entries.map { $0.captions[0] }).count, 12)
    }
}

final class RetrievalEvalSetTests: XCTestCase {
    func testLoadsHeldoutSplit() throws {
        let dir = try makeTempDirectory(self)
        var o = SyntheticCorpus.Options()
        o.samples = 10; o.shardSize = 10; o.imageSize = 16; o.heldout = 7; o.writeJSON = false
        try SyntheticCorpus(options: o).write(to: dir)
        let tok = try BertTokenizer(vocabularyURL: fixturesURL().appendingPathComponent("tokenizer-visible/vocab.txt"))
        let set = try RetrievalEvalSet.load(annotation: dir.appendingPathComponent("heldout.json"), imageSize: 16, tokenizer: tok)
        XCTAssertEqual(set.imageCount, 7)
        XCTAssertEqual(set.images.count, 7 * 3 * 16 * 16)
        XCTAssertEqual(set.textToImage, Array(0..<7))
        XCTAssertEqual(set.imageToTexts, (0..<7).map { [$0] })
        XCTAssertEqual(set.texts.batchSize, 7)
        XCTAssertEqual(set.texts.inputIds[0], 101)
        XCTAssertEqual(Set(set.captions).count, 7)
        // Images differ (distinct attribute combinations).
        XCTAssertNotEqual(Array(set.images[0..<768]), Array(set.images[768..<1536]))
    }
}

final class SynthRewriteTests: XCTestCase {
    func testRewritingASmallerCorpusDropsStaleShards() throws {
        let dir = try makeTempDirectory(self)
        var o = SyntheticCorpus.Options()
        o.samples = 30; o.shardSize = 10; o.imageSize = 16; o.heldout = 3; o.writeJSON = false
        try SyntheticCorpus(options: o).write(to: dir)
        o.samples = 12
        try SyntheticCorpus(options: o).write(to: dir)
        let index = try CorpusIndex.load(from: dir.appendingPathComponent("index.json"))
        XCTAssertEqual(index.shards.map(\.path), ["00000.tar", "00001.tar"])
        XCTAssertEqual(index.totalSamples, 12)
    }
}
