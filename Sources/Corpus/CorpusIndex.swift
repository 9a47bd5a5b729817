import Foundation

/// The corpus index: the contract between `albef-data index`, the training loader and the
/// coordinator — one definition, imported by both `DataPipeline` and `Control` (the coordinator
/// does not link any image code). JSON, field names fixed:
///
/// ```
/// {"version": 1, "format": "webdataset" | "json", "root": "<dir>",
///  "shards": [{"path": "<relative to root, or absolute>", "samples": N, "bytes": B,
///              "bad": [{"key": "...", "kind": "..."}]}],
///  "total_samples": N, "bad_samples": N}
/// ```
/// - WebDataset: one shard per tar; `samples` counts every key group in file order (bad ones too),
///   so sample i of shard s is the i-th group (0-based); `bad` lists the groups found bad while
///   indexing (structure and caption problems; image bytes are only decoded by the loader).
/// - JSON: each annotation file is cut into virtual shards of `entriesPerShard` (default 1000)
///   entries, `"path": "ann.json#k"` holding entries [k·1000, (k+1)·1000); `bytes` is the file
///   size divided evenly. Image paths are resolved against the JSON file's directory.
/// A lease is a ``SampleRange`` (epoch, shard index, samples [start, end)). `bad_samples` = Σ |bad|.
public struct CorpusIndex: Codable, Sendable, Equatable, Hashable {
    /// A sample the indexer found unusable.
    public struct BadEntry: Codable, Sendable, Equatable, Hashable {
        public var key: String
        public var kind: String
        public init(key: String, kind: String) {
            self.key = key
            self.kind = kind
        }
    }

    /// One shard (a WebDataset tar or a chunk of an ALBEF JSON list).
    public struct Shard: Codable, Sendable, Equatable, Hashable {
        public var path: String
        public var samples: Int
        public var bytes: Int
        public var bad: [BadEntry]
        public init(path: String, samples: Int, bytes: Int = 0, bad: [BadEntry] = []) {
            self.path = path
            self.samples = samples
            self.bytes = bytes
            self.bad = bad
        }
        enum CodingKeys: String, CodingKey { case path, samples, bytes, bad }
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            path = try c.decode(String.self, forKey: .path)
            samples = try c.decode(Int.self, forKey: .samples)
            bytes = try c.decodeIfPresent(Int.self, forKey: .bytes) ?? 0
            bad = try c.decodeIfPresent([BadEntry].self, forKey: .bad) ?? []
        }
    }

    /// How the shards are stored.
    public enum Format: String, Codable, Sendable, Hashable { case webdataset, json }

    public var version: Int = 1
    public var format: Format
    public var root: String
    public var shards: [Shard]
    public var totalSamples: Int
    public var badSamples: Int
    /// JSON format: the directory relative `image` paths name (ALBEF's `image_root`); nil: each
    /// annotation file's own directory. Not part of the fingerprint (hosts mount images anywhere).
    public var imageRoot: String?

    enum CodingKeys: String, CodingKey {
        case version, format, root, shards
        case imageRoot = "image_root"
        case totalSamples = "total_samples"
        case badSamples = "bad_samples"
    }

    public init(format: Format = .webdataset, root: String, shards: [Shard]) {
        self.format = format
        self.root = root
        self.shards = shards
        totalSamples = shards.reduce(0) { $0 + $1.samples }
        badSamples = shards.reduce(0) { $0 + $1.bad.count }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(Int.self, forKey: .version)
        format = try c.decodeIfPresent(Format.self, forKey: .format) ?? .webdataset
        root = try c.decodeIfPresent(String.self, forKey: .root) ?? ""
        shards = try c.decode([Shard].self, forKey: .shards)
        totalSamples = try c.decodeIfPresent(Int.self, forKey: .totalSamples) ?? shards.reduce(0) { $0 + $1.samples }
        badSamples = try c.decodeIfPresent(Int.self, forKey: .badSamples) ?? shards.reduce(0) { $0 + $1.bad.count }
        imageRoot = try c.decodeIfPresent(String.self, forKey: .imageRoot)
    }

    /// Absolute path of shard `i` (without the `#k` suffix of JSON virtual shards).
    public func filePath(_ i: Int) -> String {
        let p = shards[i].path
        let file = p.split(separator: "#", maxSplits: 1).first.map(String.init) ?? p
        return file.hasPrefix("/") ? file : root + "/" + file
    }

    /// The virtual chunk number of a JSON shard (`file.json#k` → k), 0 for tars.
    public func chunk(_ i: Int) -> Int {
        let parts = shards[i].path.split(separator: "#")
        return parts.count > 1 ? Int(parts[1]) ?? 0 : 0
    }

    /// Identifies the corpus: FNV-1a 64 of the format and, per shard, its path, sample count, byte
    /// size and bad entries, as 16 hex digits. `root` is left out (hosts mount a corpus at different
    /// places); anything that changes which sample a (shard, index) address names changes it.
    public var fingerprint: String {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        func add(_ s: String) {
            for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
            h = (h ^ 0x1F) &* 0x0000_0100_0000_01B3  // field separator
        }
        add(format.rawValue)
        for s in shards {
            add(s.path); add(String(s.samples)); add(String(s.bytes))
            for b in s.bad { add(b.key); add(b.kind) }
            add("|")
        }
        return String(format: "%016llx", h)
    }

    /// Reads and validates an index file; errors name the file and the problem.
    public static func load(from url: URL) throws -> CorpusIndex {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw CorpusError.unreadable(path: url.path)
        }
        let index: CorpusIndex
        do { index = try JSONDecoder().decode(CorpusIndex.self, from: data) } catch {
            throw CorpusError.invalid(path: url.path, reason: "not a valid index JSON (\(error))")
        }
        try index.validate(path: url.path)
        return index
    }

    /// Checks the invariants the loader and the coordinator rely on.
    public func validate(path: String) throws {
        guard version == 1 else {
            throw CorpusError.invalid(path: path, reason: "unsupported version \(version) (this build reads version 1)")
        }
        for (i, s) in shards.enumerated() where s.samples < 0 {
            throw CorpusError.invalid(path: path, reason: "shard \(i) (\(s.path)) has a negative sample count \(s.samples)")
        }
        let sum = shards.reduce(0) { $0 + $1.samples }
        guard sum > 0 else { throw CorpusError.invalid(path: path, reason: "the corpus has no samples") }
        guard sum == totalSamples else {
            throw CorpusError.invalid(path: path, reason: "total_samples \(totalSamples) != sum of shard samples \(sum)")
        }
    }

    /// Writes the index (pretty, sorted keys) atomically.
    public func save(_ url: URL) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try enc.encode(self).write(to: url, options: .atomic)
    }
}

/// A corpus index that cannot be used.
public enum CorpusError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String)
    case invalid(path: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let path):
            return "corpus index \(path): cannot read the file (check the path; `albef-data index` writes one)"
        case .invalid(let path, let reason):
            return "corpus index \(path): \(reason) (rebuild it with `albef-data index`)"
        }
    }
}
