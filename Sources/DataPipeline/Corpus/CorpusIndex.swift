import Corpus
import Foundation

extension CorpusIndex {
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
