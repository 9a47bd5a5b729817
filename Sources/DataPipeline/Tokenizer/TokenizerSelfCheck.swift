import Foundation

/// Checks `PreCaption` + `BertTokenizer` against a reference fixture directory of kind
/// `"tokenizer"` (`fixture.json` + `vocab.txt`, the schema of `tokenizer-visible/README.md`):
/// every caption's pre_caption, WordPiece tokens and ids, and every batch's padded `input_ids`
/// and `attention_mask`. Strings are compared scalar by scalar.
public enum TokenizerSelfCheck {
    struct Fixture: Decodable {
        struct Batch: Decodable {
            let captions: [String]
            let pre_captions: [String]
            let input_ids: [[Int32]]
            let attention_mask: [[Int32]]
        }
        let kind: String
        let vocab_file: String?
        let vocab_size: Int?
        let special_ids: [String: Int32]?
        let pre_caption_max_words: Int?
        let max_length: Int?
        let batches: [Batch]
        let tokens: [[String]]?
        let token_ids: [[Int32]]?
    }

    /// Runs every comparison; `passed` is true when nothing differs. `report` has one summary line
    /// per check and the first mismatches (with the caption index and both values, escaped).
    public static func run(fixtureDirectory: URL) throws -> (report: [String], passed: Bool) {
        let fixtureURL = fixtureDirectory.appendingPathComponent("fixture.json")
        guard let data = try? Data(contentsOf: fixtureURL) else {
            throw TokenizerError.fixtureUnreadable(path: fixtureURL.path, reason: "cannot read the file")
        }
        let fixture: Fixture
        do {
            fixture = try JSONDecoder().decode(Fixture.self, from: data)
        } catch {
            throw TokenizerError.fixtureUnreadable(path: fixtureURL.path, reason: "bad JSON: \(error)")
        }
        guard fixture.kind == "tokenizer" else {
            throw TokenizerError.fixtureUnreadable(path: fixtureURL.path,
                                                   reason: "kind is \"\(fixture.kind)\", expected \"tokenizer\"")
        }
        let vocabURL = fixtureDirectory.appendingPathComponent(fixture.vocab_file ?? "vocab.txt")
        let tokenizer = try BertTokenizer(vocabularyURL: vocabURL)
        let maxWords = fixture.pre_caption_max_words ?? 30
        let maxLength = fixture.max_length ?? 25

        var report: [String] = []
        var passed = true
        var mismatches: [String: Int] = [:]
        func fail(_ what: String, _ message: @autoclosure () -> String) {
            passed = false
            mismatches[what, default: 0] += 1
            if mismatches[what]! <= 5 { report.append("MISMATCH \(what): \(message())") }
        }

        if let size = fixture.vocab_size, size != tokenizer.vocabulary.count {
            fail("vocab_size", "fixture \(size), read \(tokenizer.vocabulary.count)")
        }
        for (name, id) in (fixture.special_ids ?? [:]).sorted(by: { $0.key < $1.key }) {
            if tokenizer.vocabulary.id(of: name) != id { fail("special_ids", "\(name) expected \(id)") }
        }

        var captionIndex = 0
        var captionCount = 0
        for (b, batch) in fixture.batches.enumerated() {
            var pres: [String] = []
            for (k, caption) in batch.captions.enumerated() {
                let i = captionIndex + k
                captionCount += 1
                let pre = PreCaption.apply(caption, maxWords: maxWords)
                pres.append(pre)
                if k < batch.pre_captions.count, !scalarsEqual(pre, batch.pre_captions[k]) {
                    fail("pre_caption", "caption \(i) \(escape(caption)): got \(escape(pre)), expected \(escape(batch.pre_captions[k]))")
                }
                let ids = tokenizer.ids(batch.pre_captions.count > k ? batch.pre_captions[k] : pre)
                if let expectedIds = fixture.token_ids, i < expectedIds.count, expectedIds[i] != ids {
                    fail("token_ids", "caption \(i) \(escape(caption)): got \(ids), expected \(expectedIds[i])")
                }
                if let expectedTokens = fixture.tokens, i < expectedTokens.count {
                    let toks = ids.map(tokenizer.vocabulary.token)
                    if toks.count != expectedTokens[i].count
                        || zip(toks, expectedTokens[i]).contains(where: { !scalarsEqual($0, $1) }) {
                        fail("tokens", "caption \(i): got \(toks.map(escape)), expected \(expectedTokens[i].map(escape))")
                    }
                }
            }
            if batch.pre_captions.count != batch.captions.count {
                fail("batch_shape", "batch \(b): \(batch.captions.count) captions, \(batch.pre_captions.count) pre_captions")
            }
            let encoded = tokenizer.encodeBatch(pres, maxLength: maxLength)
            let expectedIds = batch.input_ids.flatMap { $0 }
            let expectedMask = batch.attention_mask.flatMap { $0 }
            let expectedLength = batch.input_ids.first?.count ?? 0
            if encoded.length != expectedLength || encoded.batchSize != batch.input_ids.count {
                fail("batch_shape", "batch \(b): got \(encoded.batchSize)x\(encoded.length), expected \(batch.input_ids.count)x\(expectedLength)")
            } else {
                if encoded.inputIds != expectedIds { fail("input_ids", "batch \(b) differs") }
                if encoded.attentionMask != expectedMask { fail("attention_mask", "batch \(b) differs") }
            }
            captionIndex += batch.captions.count
        }
        for check in ["pre_caption", "tokens", "token_ids", "input_ids", "attention_mask", "batch_shape"] {
            let n = mismatches[check] ?? 0
            report.append("\(check): \(n == 0 ? "ok" : "\(n) mismatches")")
        }
        report.append("tokenizer selfcheck: \(captionCount) captions in \(fixture.batches.count) batches: \(passed ? "PASSED" : "FAILED")")
        return (report, passed)
    }

    static func scalarsEqual(_ a: String, _ b: String) -> Bool {
        a.unicodeScalars.elementsEqual(b.unicodeScalars)
    }

    /// ASCII rendering with `\u{…}` escapes, so NFC/NFD and invisible scalars show.
    static func escape(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            if u.value >= 0x20 && u.value < 0x7F && u != "\"" && u != "\\" {
                out.unicodeScalars.append(u)
            } else {
                out += "\\u{\(String(u.value, radix: 16))}"
            }
        }
        return out + "\""
    }
}
