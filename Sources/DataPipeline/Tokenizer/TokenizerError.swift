/// Errors of the text pipeline.
public enum TokenizerError: Error, CustomStringConvertible {
    case vocabularyUnreadable(path: String)
    case vocabularyNotUTF8(path: String)
    case fixtureUnreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case .vocabularyUnreadable(let p):
            return "vocabulary \(p) is missing or empty. HINT: pass the bert-base-uncased vocab.txt (30522 lines)."
        case .vocabularyNotUTF8(let p):
            return "vocabulary \(p) is not UTF-8. HINT: use the vocab.txt shipped with bert-base-uncased."
        case .fixtureUnreadable(let p, let r):
            return "tokenizer fixture \(p): \(r). HINT: the directory needs fixture.json (kind \"tokenizer\") and vocab.txt."
        }
    }
}
