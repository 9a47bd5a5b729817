import Foundation

/// The corpus index: the contract between `albef-data index`, the training loader and the
/// coordinator. JSON, field names fixed:
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
/// A lease is (shard index, sample range [start, end)). `bad_samples` = Σ |bad|.
public struct CorpusIndex: Codable, Sendable, Equatable {
    public struct BadEntry: Codable, Sendable, Equatable {
        public var key: String
        public var kind: String
    }
    public struct Shard: Codable, Sendable, Equatable {
        public var path: String
        public var samples: Int
        public var bytes: Int
        public var bad: [BadEntry]
    }

    public var version: Int = 1
    public var format: CorpusSpec.Format
    public var root: String
    public var shards: [Shard]
    public var totalSamples: Int
    public var badSamples: Int

    enum CodingKeys: String, CodingKey {
        case version, format, root, shards
        case totalSamples = "total_samples"
        case badSamples = "bad_samples"
    }

    public init(format: CorpusSpec.Format, root: String, shards: [Shard]) {
        self.format = format
        self.root = root
        self.shards = shards
        totalSamples = shards.reduce(0) { $0 + $1.samples }
        badSamples = shards.reduce(0) { $0 + $1.bad.count }
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

    /// Loads an index file.
    public static func load(_ url: URL) throws -> CorpusIndex {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw DataError.missingFile(path: url.path) }
        do {
            let index = try JSONDecoder().decode(CorpusIndex.self, from: data)
            guard index.version == 1 else { throw DataError.badIndex(path: url.path, reason: "version \(index.version) != 1") }
            return index
        } catch let e as DataError {
            throw e
        } catch {
            throw DataError.badIndex(path: url.path, reason: "\(error)")
        }
    }

    /// Writes the index (pretty, sorted keys) atomically.
    public func save(_ url: URL) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try enc.encode(self).write(to: url, options: .atomic)
    }

    /// Scans a corpus spec (see `CorpusSpec`) and builds its index. `root` defaults to the
    /// directory of the first file; paths under it are stored relative.
    public static func build(spec: String, root: String? = nil, entriesPerShard: Int = 1000,
                             maxCaptionBytes: Int = CaptionCheck.defaultMaxBytes) throws -> CorpusIndex {
        let (files, format) = try CorpusSpec.resolve(spec)
        let absFiles = files.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 }
        let rootDir = root.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 }
            ?? (absFiles[0] as NSString).deletingLastPathComponent
        func relative(_ p: String) -> String {
            p.hasPrefix(rootDir + "/") ? String(p.dropFirst(rootDir.count + 1)) : p
        }
        var shards: [Shard] = []
        switch format {
        case .webdataset:
            for f in absFiles {
                let tar = try TarFile(path: f)
                let ws = WebDatasetShard(scan: try tar.scan())
                var bad: [BadEntry] = []
                for e in ws.entries {
                    if let b = e.bad { bad.append(BadEntry(key: e.key, kind: b.kind.rawValue)); continue }
                    if let c = e.caption, case .failure(let k) = CaptionCheck.validate(try tar.read(c), maxBytes: maxCaptionBytes) {
                        bad.append(BadEntry(key: e.key, kind: k.rawValue))
                    }
                }
                shards.append(Shard(path: relative(f), samples: ws.entries.count, bytes: tar.size, bad: bad))
            }
        case .json:
            for f in absFiles {
                let ann = try AnnotationFile(path: f)
                let size = (try? FileManager.default.attributesOfItem(atPath: f)[.size] as? Int) ?? 0
                let chunks = max(1, (ann.entries.count + entriesPerShard - 1) / entriesPerShard)
                for k in 0..<chunks {
                    let lo = k * entriesPerShard, hi = min(ann.entries.count, lo + entriesPerShard)
                    var bad: [BadEntry] = []
                    for i in lo..<hi {
                        if let kind = JSONCorpusCheck.problem(ann.entries[i], file: ann, maxCaptionBytes: maxCaptionBytes) {
                            bad.append(BadEntry(key: String(i), kind: kind.rawValue))
                        }
                    }
                    shards.append(Shard(path: relative(f) + "#\(k)", samples: hi - lo, bytes: size / chunks, bad: bad))
                }
            }
        }
        return CorpusIndex(format: format, root: rootDir, shards: shards)
    }
}

/// Index-time checks of a JSON annotation entry (file exists, some caption is valid).
enum JSONCorpusCheck {
    static func problem(_ e: AnnotationFile.Entry, file: AnnotationFile, maxCaptionBytes: Int) -> BadSampleKind? {
        if !FileManager.default.fileExists(atPath: file.imagePath(e)) { return .missingFile }
        if e.captions.isEmpty { return .missingCaption }
        var first: BadSampleKind? = nil
        for c in e.captions {
            switch CaptionCheck.validate(c, maxBytes: maxCaptionBytes) {
            case .success: return nil
            case .failure(let k): first = first ?? k
            }
        }
        return first
    }
}
