import Foundation

/// One raw sample: encoded image bytes and its (validated) caption candidates.
public struct RawSample: Sendable {
    public var shard: Int
    public var index: Int
    /// WebDataset key, or the entry number of a JSON annotation file.
    public var key: String
    /// Shard file (with `#k` for JSON virtual shards), for messages.
    public var shardPath: String
    public var image: [UInt8]
    /// Valid captions (≥ 1); a JSON list entry may have several, one is picked per visit.
    public var captions: [String]
    /// `shard:key`, naming the sample in errors.
    public var source: String { "\(shardPath):\(key)" }
}

/// Random access to the samples of an indexed corpus, safe to call from several threads.
///
/// Tar member tables and annotation files are read once per shard and cached. Every failure is a
/// thrown `BadSample` naming the shard and key.
public final class CorpusReader: @unchecked Sendable {
    public let index: CorpusIndex
    public let maxCaptionBytes: Int
    let lock = NSLock()
    var tarShards: [Int: (TarFile, WebDatasetShard)] = [:]
    var annotations: [String: AnnotationFile] = [:]

    public init(index: CorpusIndex, maxCaptionBytes: Int = CaptionCheck.defaultMaxBytes) {
        self.index = index
        self.maxCaptionBytes = maxCaptionBytes
    }

    /// Number of samples in shard `s`.
    public func sampleCount(shard s: Int) -> Int { index.shards[s].samples }

    func tarShard(_ s: Int) throws -> (TarFile, WebDatasetShard) {
        lock.lock()
        if let t = tarShards[s] { lock.unlock(); return t }
        lock.unlock()
        let tar = try TarFile(path: index.filePath(s))
        let ws = WebDatasetShard(scan: try tar.scan())
        lock.lock()
        defer { lock.unlock() }
        if tarShards.count >= 256 { tarShards.removeAll() }
        tarShards[s] = (tar, ws)
        return (tar, ws)
    }

    func annotation(_ s: Int) throws -> AnnotationFile {
        let path = index.filePath(s)
        lock.lock()
        if let a = annotations[path] { lock.unlock(); return a }
        lock.unlock()
        let a = try AnnotationFile(path: path, imageRoot: index.imageRoot)
        lock.lock()
        annotations[path] = a
        lock.unlock()
        return a
    }

    /// Reads sample `i` of shard `s` (0-based, file order).
    public func read(shard s: Int, index i: Int) throws -> RawSample {
        let shardPath = index.shards[s].path
        func bad(_ key: String, _ kind: BadSampleKind, _ message: String) -> BadSample {
            BadSample(shard: shardPath, key: key, kind: kind, message: message)
        }
        switch index.format {
        case .webdataset:
            let (tar, ws): (TarFile, WebDatasetShard)
            do {
                (tar, ws) = try tarShard(s)
            } catch {
                throw bad("*", .missingFile, "\(error)")
            }
            guard i < ws.entries.count else {
                throw bad("#\(i)", .truncatedMember, "shard has \(ws.entries.count) samples now, index says \(index.shards[s].samples)")
            }
            let e = ws.entries[i]
            if let b = e.bad { throw bad(e.key, b.kind, b.message) }
            guard let im = e.image, let cm = e.caption else { throw bad(e.key, .missingImage, "incomplete sample") }
            let captionBytes = try tar.read(cm)
            let caption: String
            switch CaptionCheck.validate(captionBytes, maxBytes: maxCaptionBytes) {
            case .success(let c): caption = c
            case .failure(let k): throw bad(e.key, k, "caption member \(cm.name) (\(captionBytes.count) bytes)")
            }
            let image = try tar.read(im)
            if image.count < im.size { throw bad(e.key, .truncatedMember, "image member \(im.name) is cut short") }
            return RawSample(shard: s, index: i, key: e.key, shardPath: shardPath, image: image, captions: [caption])
        case .json:
            let ann: AnnotationFile
            do { ann = try annotation(s) } catch { throw bad("*", .missingFile, "\(error)") }
            let global = index.chunk(s) * max(1, jsonEntriesPerShard(s, ann)) + i
            guard global < ann.entries.count else { throw bad("\(global)", .missingFile, "no entry \(global)") }
            let e = ann.entries[global]
            var captions: [String] = []
            var firstBad: BadSampleKind? = nil
            for c in e.captions {
                switch CaptionCheck.validate(c, maxBytes: maxCaptionBytes) {
                case .success(let v): captions.append(v)
                case .failure(let k): firstBad = firstBad ?? k
                }
            }
            guard !captions.isEmpty else { throw bad("\(global)", firstBad ?? .missingCaption, "image \(e.image)") }
            let path = ann.imagePath(e)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw bad("\(global)", .missingFile, "image file \(path) does not exist or is unreadable")
            }
            return RawSample(shard: s, index: i, key: "\(global)", shardPath: shardPath, image: [UInt8](data), captions: captions)
        }
    }

    /// Entries per virtual shard of a JSON file: the sample count of its chunk 0.
    func jsonEntriesPerShard(_ s: Int, _ ann: AnnotationFile) -> Int {
        let file = index.shards[s].path.split(separator: "#").first.map(String.init) ?? ""
        return index.shards.first(where: { $0.path == file + "#0" })?.samples ?? ann.entries.count
    }
}
