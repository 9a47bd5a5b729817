/// Greedy longest-match-first WordPiece over one basic token.
///
/// Concretely: a token of more than `maxCharsPerWord` (100) scalars → `[UNK]`. Otherwise, from
/// `start = 0`, take the longest `chars[start..<end]` in the vocabulary (prefixed `##` when
/// `start > 0`), emit it and continue at `end`; if nothing matches at some `start`, the whole token
/// is one `[UNK]`. Mirrors `transformers` `WordpieceTokenizer.tokenize`.
public struct WordPiece: Sendable {
    public let vocabulary: Vocabulary
    public let maxCharsPerWord: Int

    public init(vocabulary: Vocabulary, maxCharsPerWord: Int = 100) {
        self.vocabulary = vocabulary
        self.maxCharsPerWord = maxCharsPerWord
    }

    /// Vocabulary ids of the pieces of one basic token.
    public func pieceIds(_ word: [Unicode.Scalar]) -> [Int32] {
        let chars = word.map(\.value)
        if chars.count > maxCharsPerWord { return [vocabulary.unkId] }
        var out: [Int32] = []
        var start = 0
        var key: [UInt32] = []
        key.reserveCapacity(chars.count + 2)
        while start < chars.count {
            var end = chars.count
            var found: Int32? = nil
            while start < end {
                key.removeAll(keepingCapacity: true)
                if start > 0 { key.append(0x23); key.append(0x23) }
                key.append(contentsOf: chars[start..<end])
                if let id = vocabulary.id(ofScalars: key) { found = id; break }
                end -= 1
            }
            guard let id = found else { return [vocabulary.unkId] }
            out.append(id)
            start = end
        }
        return out
    }
}
