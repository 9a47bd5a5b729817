import Foundation

/// ALBEF's BERT tokenizer: basic tokenization + WordPiece, and batch encoding as `Pretrain.py`
/// calls it: `tokenizer(texts, padding='longest', truncation=True, max_length=25)`.
///
/// ALBEF's customised `build_inputs_with_special_tokens` gives `[CLS] pieces` with NO `[SEP]`, so
/// a row keeps at most `maxLength - 1` pieces (cut from the end).
public struct BertTokenizer: Sendable {
    public let vocabulary: Vocabulary
    let wordPiece: WordPiece

    public init(vocabulary: Vocabulary) {
        self.vocabulary = vocabulary
        wordPiece = WordPiece(vocabulary: vocabulary)
    }

    /// Loads `vocab.txt`.
    public init(vocabularyURL: URL) throws {
        self.init(vocabulary: try Vocabulary(contentsOf: vocabularyURL))
    }

    /// Vocabulary ids of `text` (no special tokens, untruncated).
    ///
    /// As transformers 4.8.1 `PreTrainedTokenizer.tokenize` with `do_lower_case`, the text is first
    /// lowercased one code point at a time (no final-sigma context), then basic-tokenized.
    public func ids(_ text: String) -> [Int32] {
        let lowered = text.unicodeScalars.flatMap { UnicodeRules.pythonLower([$0]) }
        return BasicTokenizer.tokenize(lowered).flatMap(wordPiece.pieceIds)
    }

    /// WordPiece strings of `text` (no special tokens, untruncated); `tokenizer.tokenize(text)`.
    public func tokenize(_ text: String) -> [String] {
        ids(text).map(vocabulary.token)
    }

    /// `[CLS]` + the first `maxLength - 1` ids of each text, right-padded with `[PAD]` to the
    /// longest row. The texts should already be `PreCaption.apply`'d.
    public func encodeBatch(_ texts: [String], maxLength: Int = 25) -> TokenizedBatch {
        precondition(maxLength >= 1, "encodeBatch: maxLength must be ≥ 1, got \(maxLength)")
        let rows = texts.map { [vocabulary.clsId] + ids($0).prefix(maxLength - 1) }
        let length = rows.map(\.count).max() ?? 0
        var inputIds = [Int32](repeating: vocabulary.padId, count: rows.count * length)
        var mask = [Int32](repeating: 0, count: rows.count * length)
        for (r, row) in rows.enumerated() {
            for (c, id) in row.enumerated() {
                inputIds[r * length + c] = id
                mask[r * length + c] = 1
            }
        }
        return TokenizedBatch(inputIds: inputIds, attentionMask: mask, batchSize: rows.count, length: length)
    }
}

/// A padded batch of token ids.
public struct TokenizedBatch: Sendable, Equatable {
    /// (batchSize, length), row-major; `[CLS]` first, `[PAD]` (0) on the right.
    public var inputIds: [Int32]
    /// (batchSize, length): 1 on `[CLS]` and the pieces, 0 on padding.
    public var attentionMask: [Int32]
    public var batchSize: Int
    public var length: Int
}
