/// What is wrong with one sample. The raw values are the `kind` strings of the corpus index and
/// of the quarantine file.
public enum BadSampleKind: String, Codable, Sendable, CaseIterable, Error {
    case corruptImage = "corrupt_image"
    case truncatedImage = "truncated_image"
    case unknownImageFormat = "unknown_image_format"
    case missingFile = "missing_file"
    case missingImage = "missing_image"
    case missingCaption = "missing_caption"
    case emptyCaption = "empty_caption"
    case nonUTF8Caption = "non_utf8_caption"
    case overlongCaption = "overlong_caption"
    case truncatedMember = "truncated_member"
    case duplicateKey = "duplicate_key"
    case corruptTar = "corrupt_tar"
    /// The image header declares more pixels than `max_image_pixels` (a decompression bomb?).
    case imageTooLarge = "image_too_large"
}

/// A sample that was skipped: where it is and why.
public struct BadSample: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    public var shard: String
    public var key: String
    public var kind: BadSampleKind
    public var message: String

    public init(shard: String, key: String, kind: BadSampleKind, message: String) {
        self.shard = shard
        self.key = key
        self.kind = kind
        self.message = message
    }

    public var description: String { "bad sample \(shard):\(key): \(kind.rawValue): \(message)" }
}

/// Errors of the corpus readers and the loader (environment and data, not programmer errors).
public enum DataError: Error, CustomStringConvertible {
    case missingFile(path: String)
    case unreadable(path: String, reason: String)
    case badCorpusSpec(spec: String, reason: String)
    case badAnnotation(path: String, reason: String)
    case badIndex(path: String, reason: String)
    case tooManyBadSamples(bad: Int, seen: Int, maxFraction: Double, last: BadSample)
    case emptyCorpus(spec: String)
    case notEnoughSamples(available: Int, needed: Int)

    public var description: String {
        switch self {
        case .missingFile(let p):
            return "\(p): no such file. HINT: check the corpus path / root directory."
        case .unreadable(let p, let r):
            return "\(p): cannot read: \(r)."
        case .badCorpusSpec(let s, let r):
            return "corpus spec \"\(s)\": \(r). HINT: use data/{00000..00127}.tar, a comma list, a directory, @list.txt or ann.json."
        case .badAnnotation(let p, let r):
            return "annotation file \(p): \(r). HINT: expected [{\"image\": path, \"caption\": str | [str]}]."
        case .badIndex(let p, let r):
            return "corpus index \(p): \(r). HINT: rebuild it with `albef-data index --corpus SPEC --out index.json`."
        case .tooManyBadSamples(let bad, let seen, let f, let last):
            return "too many bad samples: \(bad) of \(seen) exceed the allowed fraction \(f); last: \(last). HINT: inspect the quarantine file, fix or drop the shards, or raise maxBadFraction."
        case .emptyCorpus(let s):
            return "corpus \(s) has no usable samples. HINT: check the paths and the index."
        case .notEnoughSamples(let a, let n):
            return "the corpus has \(a) usable samples, fewer than the \(n) needed for one batch on every rank. HINT: lower the batch size or world size."
        }
    }
}
