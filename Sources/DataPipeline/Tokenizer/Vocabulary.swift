import Foundation

/// A WordPiece vocabulary: line i (0-based, `\n` stripped) of `vocab.txt` has id i.
///
/// Keys are compared scalar by scalar (not with Swift's canonical-equivalence `String ==`), as
/// Python does: `"caf\u{E9}"` and `"cafe\u{301}"` are different entries.
/// Mirrors `transformers.models.bert.tokenization_bert.load_vocab` (a later duplicate line wins).
public struct Vocabulary: Sendable {
    /// Scalar values of each token, by id.
    public let tokens: [[UInt32]]
    let ids: [[UInt32]: Int32]

    /// Special ids of the standard uncased BERT vocabulary.
    public var padId: Int32 { id(of: "[PAD]") ?? 0 }
    public var unkId: Int32 { id(of: "[UNK]") ?? 100 }
    public var clsId: Int32 { id(of: "[CLS]") ?? 101 }
    public var sepId: Int32 { id(of: "[SEP]") ?? 102 }
    public var maskId: Int32 { id(of: "[MASK]") ?? 103 }
    public var count: Int { tokens.count }

    /// Builds from the lines of a vocabulary file.
    public init(lines: [String]) {
        var toks: [[UInt32]] = []
        toks.reserveCapacity(lines.count)
        var map: [[UInt32]: Int32] = [:]
        map.reserveCapacity(lines.count)
        for (i, line) in lines.enumerated() {
            let key = line.unicodeScalars.map(\.value)
            toks.append(key)
            map[key] = Int32(i)
        }
        tokens = toks
        ids = map
    }

    /// Reads `vocab.txt` (UTF-8, one token per line).
    public init(contentsOf url: URL) throws {
        guard let data = try? Data(contentsOf: url) else {
            throw TokenizerError.vocabularyUnreadable(path: url.path)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TokenizerError.vocabularyNotUTF8(path: url.path)
        }
        var lines = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false)
            .map { String(String.UnicodeScalarView($0)) }
        if lines.last == "" { lines.removeLast() }
        guard !lines.isEmpty else { throw TokenizerError.vocabularyUnreadable(path: url.path) }
        self.init(lines: lines)
    }

    /// The id of a token given as scalar values.
    @inline(__always)
    public func id(ofScalars key: [UInt32]) -> Int32? { ids[key] }

    /// The id of a token string (scalar-exact).
    public func id(of token: String) -> Int32? { ids[token.unicodeScalars.map(\.value)] }

    /// The token string of an id.
    public func token(_ id: Int32) -> String {
        String(String.UnicodeScalarView(tokens[Int(id)].compactMap(Unicode.Scalar.init)))
    }
}
