import Foundation
import XCTest
import Tensor
@testable import DataPipeline

/// Loader behaviour on a small synthetic corpus rendered into a temporary directory.
final class LoaderTests: XCTestCase {
    static var corpusDir: URL? = nil
    static var tokenizer: BertTokenizer? = nil

    /// 203 samples of 16 px in shards of 50 (shared by the tests of this class).
    func corpus() throws -> (CorpusIndex, BertTokenizer) {
        if LoaderTests.corpusDir == nil {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("albef-loader-tests-\(UUID().uuidString)")
            var o = SyntheticCorpus.Options()
            o.samples = 203; o.shardSize = 50; o.imageSize = 16; o.heldout = 10; o.writeJSON = false; o.seed = 5
            try SyntheticCorpus(options: o).write(to: dir)
            LoaderTests.corpusDir = dir
            LoaderTests.tokenizer = try BertTokenizer(vocabularyURL: fixturesURL().appendingPathComponent("tokenizer-visible/vocab.txt"))
        }
        return (try CorpusIndex.load(from: LoaderTests.corpusDir!.appendingPathComponent("index.json")), LoaderTests.tokenizer!)
    }

    override class func tearDown() {
        if let d = corpusDir { try? FileManager.default.removeItem(at: d) }
    }

    func config(_ workers: Int = 2) -> DataLoader.Configuration {
        var c = DataLoader.Configuration(batchSize: 8, imageSize: 16)
        c.workers = workers
        c.seed = 42
        c.log = { _ in }
        return c
    }

    func drain(_ l: DataLoader) throws -> [Batch] {
        var out: [Batch] = []
        while let b = try l.next() { out.append(b) }
        return out
    }

    func testStaticShardingPartitionsAndEqualBatchCounts() throws {
        let (index, tok) = try corpus()
        var seen = Set<SampleRef>()
        var counts: [Int] = []
        for rank in 0..<3 {
            let l = try DataLoader(index: index, tokenizer: tok, configuration: config(), rank: rank, worldSize: 3, epoch: 0)
            let batches = try drain(l)
            counts.append(batches.count)
            XCTAssertEqual(l.batchesPerEpoch, (203 / 3) / 8)
            for b in batches {
                XCTAssertEqual(b.batchSize, 8)
                XCTAssertEqual(b.images.count, 8 * 3 * 16 * 16)
                XCTAssertEqual(b.inputIds.count, 8 * b.textLength)
                XCTAssertTrue(b.textLength <= 25)
                for i in 0..<8 {
                    XCTAssertEqual(b.inputIds[i * b.textLength], 101)
                    XCTAssertEqual(b.attentionMask[i * b.textLength], 1)
                }
                for s in b.samples { XCTAssertTrue(seen.insert(s).inserted, "sample \(s) given twice") }
            }
        }
        XCTAssertEqual(counts, [8, 8, 8])
        XCTAssertEqual(try DataLoader.batchesPerEpoch(index: index, configuration: config(), worldSize: 3), 8)
    }

    func testDeterministicAcrossThreadCountsAndEpochsDiffer() throws {
        let (index, tok) = try corpus()
        let a = try drain(DataLoader(index: index, tokenizer: tok, configuration: config(1), rank: 1, worldSize: 2, epoch: 3))
        let b = try drain(DataLoader(index: index, tokenizer: tok, configuration: config(3), rank: 1, worldSize: 2, epoch: 3))
        XCTAssertEqual(a.count, b.count)
        for (x, y) in zip(a, b) {
            XCTAssertEqual(x.samples, y.samples)
            XCTAssertEqual(x.images, y.images)
            XCTAssertEqual(x.inputIds, y.inputIds)
            XCTAssertEqual(x.position, y.position)
        }
        let c = try drain(DataLoader(index: index, tokenizer: tok, configuration: config(2), rank: 1, worldSize: 2, epoch: 4))
        XCTAssertNotEqual(a.map(\.samples), c.map(\.samples))
    }

    func testResumeFromSavedPositionIsSampleExact() throws {
        let (index, tok) = try corpus()
        let full = try drain(DataLoader(index: index, tokenizer: tok, configuration: config(), rank: 0, worldSize: 2, epoch: 1))
        let saved = try JSONDecoder().decode(LoaderPosition.self, from: JSONEncoder().encode(full[4].position))
        let resumed = try drain(DataLoader(index: index, tokenizer: tok, configuration: config(), rank: 0, worldSize: 2,
                                           epoch: 1, resumeFrom: saved))
        XCTAssertEqual(resumed.count, full.count - 5)
        for (x, y) in zip(full.dropFirst(5), resumed) {
            XCTAssertEqual(x.samples, y.samples)
            XCTAssertEqual(x.images, y.images)
            XCTAssertEqual(x.captions, y.captions)
        }
    }

    func testRangeSourceOrderPartialBatchAndPending() throws {
        let (index, tok) = try corpus()
        let ranges = [SampleRange(shard: 2, start: 10, end: 15), SampleRange(shard: 0, start: 0, end: 0),
                      SampleRange(shard: 4, start: 0, end: 3), SampleRange(shard: 1, start: 40, end: 49)]
        let l = try DataLoader(index: index, tokenizer: tok, configuration: config(), ranges: FixedRangeSource(ranges))
        let batches = try drain(l)
        let expected = ranges.flatMap { r in (r.start..<r.end).map { SampleRef(shard: r.shard, index: $0) } }
        XCTAssertEqual(batches.flatMap(\.samples), expected)
        XCTAssertEqual(batches.map(\.batchSize), [8, 8, 1])
        XCTAssertEqual(batches[0].keys.first, "000000110")
        // After batch 1 (16 samples: 5 + 3 + 8 of shard 1 [40, 49)), the fetched-but-unread rest is shard 1 [48, 49).
        XCTAssertEqual(batches[1].position.pending, [SampleRange(shard: 1, start: 48, end: 49)])
        XCTAssertEqual(batches[2].position.pending, [])
        // Ranges 0 (5 samples), 1 (empty) and 2 (3) are done after batch 0; all 4 after the last.
        XCTAssertEqual(batches[0].position.rangesCompleted, 3)
        XCTAssertEqual(batches[1].position.rangesCompleted, 3)
        XCTAssertEqual(batches[2].position.rangesCompleted, 4)
        // A range's own epoch drives its samples' random stream (not the loader's epoch).
        let e0 = try drain(DataLoader(index: index, tokenizer: tok, configuration: config(), ranges: FixedRangeSource([SampleRange(epoch: 0, shard: 0, start: 0, end: 8)]), epoch: 0))
        let e5 = try drain(DataLoader(index: index, tokenizer: tok, configuration: config(), ranges: FixedRangeSource([SampleRange(epoch: 5, shard: 0, start: 0, end: 8)]), epoch: 0))
        let l5 = try drain(DataLoader(index: index, tokenizer: tok, configuration: config(), ranges: FixedRangeSource([SampleRange(epoch: 5, shard: 0, start: 0, end: 8)]), epoch: 5))
        XCTAssertNotEqual(e0[0].images, e5[0].images)
        XCTAssertEqual(e5[0].images, l5[0].images)
        // Positions saved before this field existed still decode.
        let old = try JSONDecoder().decode(LoaderPosition.self, from: Data(#"{"epoch":1,"cursor":5,"batches":2,"pending":[]}"#.utf8))
        XCTAssertEqual(old, LoaderPosition(epoch: 1, cursor: 5, batches: 2))
        var c = config()
        c.dropLast = true
        XCTAssertEqual(try drain(DataLoader(index: index, tokenizer: tok, configuration: c, ranges: FixedRangeSource(ranges))).count, 2)
        // A lease outside the index is an error, not a crash.
        let bad = try DataLoader(index: index, tokenizer: tok, configuration: config(), ranges: FixedRangeSource([SampleRange(shard: 99, start: 0, end: 1)]))
        XCTAssertThrowsError(try bad.next())
    }

    func testEvalModeAndTextLength() throws {
        let (index, tok) = try corpus()
        var c = config()
        c.mode = .eval
        c.maxTextLength = 4
        let l = try DataLoader(index: index, tokenizer: tok, configuration: c, rank: 0, worldSize: 1, epoch: 0)
        defer { l.stop() }
        let b = try XCTUnwrap(l.next())
        XCTAssertLessThanOrEqual(b.textLength, 4)
        XCTAssertTrue(b.images.allSatisfy { $0.isFinite })
    }
}

final class LoaderFlipCaptionTests: XCTestCase {
    func testPresets() {
        var c = DataLoader.Configuration(batchSize: 2, imageSize: 8)
        XCTAssertTrue(c.useRandAugment)
        XCTAssertEqual(c.cropScale.0, 0.2)
        c.apply(.light)
        XCTAssertEqual(c.cropScale.0, 0.5)
        XCTAssertTrue(c.flipSwapsLeftRight)
        XCTAssertFalse(c.useRandAugment)
        c.apply(.none)
        XCTAssertEqual(c.flipProbability, 0)
        c.apply(.albef)
        XCTAssertEqual(c.flipProbability, 0.5)
        XCTAssertFalse(c.flipSwapsLeftRight)
    }

    func testFlipSwapsLeftRightWhenAsked() throws {
        let dir = try makeTempDirectory(self)
        let jpg = try JPEGEncoder.encode(RGBImage(width: 16, height: 16, fill: 50))
        try Data(jpg).write(to: dir.appendingPathComponent("a.jpg"))
        try AnnotationFile.write([.init(image: "a.jpg", captions: ["a red circle on the left, not right"])],
                                 to: dir.appendingPathComponent("ann.json"), listCaptions: false)
        let index = try CorpusIndex.build(spec: dir.appendingPathComponent("ann.json").path)
        let tok = try BertTokenizer(vocabularyURL: fixturesURL().appendingPathComponent("tokenizer-visible/vocab.txt"))
        var c = DataLoader.Configuration(batchSize: 1, imageSize: 8)
        c.flipProbability = 1
        c.useRandAugment = false
        c.log = { _ in }
        let ranges = FixedRangeSource([SampleRange(shard: 0, start: 0, end: 1)])
        XCTAssertEqual(try DataLoader(index: index, tokenizer: tok, configuration: c, ranges: ranges).next()?.captions,
                       ["a red circle on the left not right"])
        c.flipSwapsLeftRight = true
        let l = try DataLoader(index: index, tokenizer: tok, configuration: c, ranges: FixedRangeSource([SampleRange(shard: 0, start: 0, end: 1)]))
        let b = try XCTUnwrap(l.next())
        XCTAssertEqual(b.captions, ["a red circle on the right not left"])
        XCTAssertEqual(Array(b.inputIds[0..<b.textLength]), [101] + tok.ids("a red circle on the right not left"))
    }
}

/// A source whose second call blocks until released (a coordinator that is slow to lease).
final class BlockingRangeSource: SampleRangeSource, @unchecked Sendable {
    let release = DispatchSemaphore(value: 0)
    let calls = Locked(0)
    func nextRange() throws -> SampleRange? {
        let n = calls.with { c -> Int in c += 1; return c }
        if n == 1 { return SampleRange(shard: 0, start: 0, end: 8) }
        _ = release.wait(timeout: .now() + 20)
        return nil
    }
}

final class LoaderBlockingSourceTests: XCTestCase {
    func testReadyBatchIsDeliveredWhileTheSourceBlocks() throws {
        let dir = try makeTempDirectory(self)
        var o = SyntheticCorpus.Options()
        o.samples = 8; o.shardSize = 8; o.imageSize = 16; o.heldout = 1; o.writeJSON = false
        try SyntheticCorpus(options: o).write(to: dir)
        let index = try CorpusIndex.load(from: dir.appendingPathComponent("index.json"))
        let tok = try BertTokenizer(vocabularyURL: fixturesURL().appendingPathComponent("tokenizer-visible/vocab.txt"))
        var c = DataLoader.Configuration(batchSize: 8, imageSize: 16)
        c.log = { _ in }
        let source = BlockingRangeSource()
        let l = try DataLoader(index: index, tokenizer: tok, configuration: c, ranges: source)
        let start = Date()
        let first = try l.next()
        XCTAssertEqual(first?.batchSize, 8)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "the consumer waited for the blocked source")
        source.release.signal()
        XCTAssertNil(try l.next())
    }
}
