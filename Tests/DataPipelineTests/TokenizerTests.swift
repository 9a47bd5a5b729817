import Foundation
import XCTest
@testable import DataPipeline

/// Fixture: `Fixtures/tokenizer-visible` (reference outputs of ALBEF `pre_caption` and its
/// `BertTokenizer`, transformers 4.8.1; see its README).
final class TokenizerTests: XCTestCase {
    var fixtureDir: URL { fixturesURL().appendingPathComponent("tokenizer-visible") }

    func testSelfCheckPassesOnVisibleFixture() throws {
        let (report, passed) = try TokenizerSelfCheck.run(fixtureDirectory: fixtureDir)
        XCTAssertTrue(passed, report.joined(separator: "\n"))
        XCTAssertTrue(report.last?.contains("300 captions") ?? false, report.joined(separator: "\n"))
    }

    func testEveryCaptionMatchesIndividually() throws {
        let data = try Data(contentsOf: fixtureDir.appendingPathComponent("fixture.json"))
        let fixture = try JSONDecoder().decode(TokenizerSelfCheck.Fixture.self, from: data)
        let tok = try BertTokenizer(vocabularyURL: fixtureDir.appendingPathComponent("vocab.txt"))
        var i = 0
        for batch in fixture.batches {
            for (k, caption) in batch.captions.enumerated() {
                let pre = PreCaption.apply(caption)
                XCTAssertEqual(Array(pre.unicodeScalars), Array(batch.pre_captions[k].unicodeScalars), "caption \(i)")
                XCTAssertEqual(tok.ids(pre), fixture.token_ids![i], "caption \(i)")
                i += 1
            }
        }
        XCTAssertEqual(i, 300)
    }

    func testSelfCheckDetectsAWrongExpectation() throws {
        let dir = try makeTempDirectory(self)
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureDir.appendingPathComponent("fixture.json"))) as! [String: Any]
        var batches = json["batches"] as! [[String: Any]]
        var pres = batches[0]["pre_captions"] as! [String]
        pres[0] = pres[0] + "x"
        batches[0]["pre_captions"] = pres
        json["batches"] = batches
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("fixture.json"))
        try FileManager.default.copyItem(at: fixtureDir.appendingPathComponent("vocab.txt"), to: dir.appendingPathComponent("vocab.txt"))
        let (report, passed) = try TokenizerSelfCheck.run(fixtureDirectory: dir)
        XCTAssertFalse(passed)
        XCTAssertTrue(report.contains { $0.hasPrefix("MISMATCH pre_caption") }, report.joined(separator: "\n"))
    }

    func testFinalSigmaAndDottedI() {
        XCTAssertEqual(Array(PreCaption.apply("ΟΔΟΣ ΣΑ").unicodeScalars), Array("οδος σα".unicodeScalars))
        XCTAssertEqual(Array(PreCaption.apply("\u{130}").unicodeScalars), ["i", "\u{307}"])
    }

    func testTruncationAndPadding() throws {
        let tok = try BertTokenizer(vocabularyURL: fixtureDir.appendingPathComponent("vocab.txt"))
        let long = Array(repeating: "dog", count: 40).joined(separator: " ")
        let b = tok.encodeBatch(["a dog", long, ""], maxLength: 25)
        XCTAssertEqual(b.length, 25)
        XCTAssertEqual(b.batchSize, 3)
        XCTAssertEqual(Array(b.inputIds[0..<4]), [101, 1037, 3899, 0])
        XCTAssertEqual(b.attentionMask[25..<50].reduce(0, +), 25)
        XCTAssertEqual(Array(b.inputIds[50..<52]), [101, 0])
        XCTAssertEqual(Array(b.attentionMask[50..<52]), [1, 0])
    }
}

/// Fixture: `Fixtures/tokenizer-fuzz`, 400 random captions over tricky code points (random code
/// points across the whole range, NFC/NFD/NFKC forms, case changes, long captions), expected
/// outputs from ALBEF's `pre_caption` and transformers 4.8.1's slow `BertTokenizer`; made once by
/// `make_fuzz.py tokenizer-fuzz 400 3` (see the script).
final class TokenizerFuzzTests: XCTestCase {
    func testSelfCheckPassesOnFuzzFixture() throws {
        let (report, passed) = try TokenizerSelfCheck.run(fixtureDirectory: fixturesURL().appendingPathComponent("tokenizer-fuzz"))
        XCTAssertTrue(passed, report.joined(separator: "\n"))
        XCTAssertTrue(report.last?.contains("400 captions") ?? false)
    }

    func testRawTextIsLowercasedPerCodePointLikeTransformers() throws {
        let tok = try BertTokenizer(vocabularyURL: fixturesURL().appendingPathComponent("tokenizer-visible/vocab.txt"))
        // transformers lowercases code point by code point first, so a final capital sigma becomes σ, not ς.
        XCTAssertEqual(tok.tokenize("ΟΔΟΣ"), tok.tokenize("οδοσ"))
        XCTAssertNotEqual(tok.ids("οδος"), tok.ids("ΟΔΟΣ"))
    }
}
