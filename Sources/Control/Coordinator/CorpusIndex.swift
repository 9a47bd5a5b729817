import Foundation

/// The corpus index written by `albef-data index`: the contract with the data pipeline.
///
/// ```json
/// {"version": 1, "format": "webdataset", "root": "/data/cc3m",
///  "shards": [{"path": "00000.tar", "samples": 1000, "bytes": 123456,
///              "bad": [{"key": "000000042", "kind": "truncated_jpeg"}]}],
///  "total_samples": 1000, "bad_samples": 1}
/// ```
public struct CorpusIndex: Codable, Hashable, Sendable {
    /// A sample the indexer found unusable.
    public struct BadSample: Codable, Hashable, Sendable {
        public var key: String
        public var kind: String
        public init(key: String, kind: String) {
            self.key = key
            self.kind = kind
        }
    }

    /// One shard (a WebDataset tar or an ALBEF JSON list).
    public struct Shard: Codable, Hashable, Sendable {
        public var path: String
        public var samples: UInt64
        public var bytes: UInt64
        public var bad: [BadSample]
        public init(path: String, samples: UInt64, bytes: UInt64 = 0, bad: [BadSample] = []) {
            self.path = path
            self.samples = samples
            self.bytes = bytes
            self.bad = bad
        }
        enum CodingKeys: String, CodingKey { case path, samples, bytes, bad }
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            path = try c.decode(String.self, forKey: .path)
            samples = try c.decode(UInt64.self, forKey: .samples)
            bytes = try c.decodeIfPresent(UInt64.self, forKey: .bytes) ?? 0
            bad = try c.decodeIfPresent([BadSample].self, forKey: .bad) ?? []
        }
    }

    public var version: Int
    public var format: String
    public var root: String
    public var shards: [Shard]
    public var totalSamples: UInt64
    public var badSamples: UInt64

    enum CodingKeys: String, CodingKey {
        case version, format, root, shards
        case totalSamples = "total_samples"
        case badSamples = "bad_samples"
    }

    public init(format: String = "webdataset", root: String, shards: [Shard]) {
        version = 1
        self.format = format
        self.root = root
        self.shards = shards
        totalSamples = shards.reduce(0) { $0 + $1.samples }
        badSamples = shards.reduce(0) { $0 + UInt64($1.bad.count) }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(Int.self, forKey: .version)
        format = try c.decodeIfPresent(String.self, forKey: .format) ?? "webdataset"
        root = try c.decodeIfPresent(String.self, forKey: .root) ?? ""
        shards = try c.decode([Shard].self, forKey: .shards)
        totalSamples = try c.decodeIfPresent(UInt64.self, forKey: .totalSamples) ?? shards.reduce(0) { $0 + $1.samples }
        badSamples = try c.decodeIfPresent(UInt64.self, forKey: .badSamples) ?? shards.reduce(0) { $0 + UInt64($1.bad.count) }
    }

    /// Reads and validates an index file; errors name the file and the problem.
    public static func load(from url: URL) throws -> CorpusIndex {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CoordinatorError.badCorpusIndex(path: url.path, reason: "cannot read the file (\(error.localizedDescription))")
        }
        let index: CorpusIndex
        do { index = try JSONDecoder().decode(CorpusIndex.self, from: data) } catch {
            throw CoordinatorError.badCorpusIndex(path: url.path, reason: "not a valid index JSON (\(error))")
        }
        try index.validate(path: url.path)
        return index
    }

    /// Checks the invariants the coordinator relies on.
    public func validate(path: String) throws {
        guard version == 1 else {
            throw CoordinatorError.badCorpusIndex(path: path, reason: "unsupported version \(version) (this coordinator reads version 1)")
        }
        guard format == "webdataset" || format == "json" else {
            throw CoordinatorError.badCorpusIndex(path: path, reason: "unknown format \"\(format)\" (expected webdataset or json)")
        }
        let sum = shards.reduce(UInt64(0)) { $0 + $1.samples }
        guard sum > 0 else { throw CoordinatorError.badCorpusIndex(path: path, reason: "the corpus has no samples") }
        guard sum == totalSamples else {
            throw CoordinatorError.badCorpusIndex(path: path, reason: "total_samples \(totalSamples) != sum of shard samples \(sum)")
        }
    }
}
