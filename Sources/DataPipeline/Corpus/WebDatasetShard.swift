/// The samples of one WebDataset tar shard, as img2dataset / `webdataset.TarWriter` write them:
/// consecutive members `KEY.EXT` grouped by KEY (the name up to the first `.` of its last path
/// component, as webdataset's `base_plus_ext`), with EXT in `jpg|jpeg|png` (image), `txt`
/// (caption) and optionally `json`; other extensions are ignored.
///
/// Sample indices are 0-based in file order, counting every key group, bad ones included, so an
/// index from `CorpusIndex` stays valid. A group is bad when it has no image or no caption, when its
/// key was already seen (non-adjacent repeat or a repeated extension: `duplicate_key`), or when the
/// archive ends inside one of its members (`truncated_member`).
public struct WebDatasetShard: Sendable {
    public struct Entry: Sendable {
        public var key: String
        public var image: TarMember?
        public var caption: TarMember?
        public var json: TarMember?
        public var bad: (kind: BadSampleKind, message: String)?
    }

    public var entries: [Entry]
    public var fileSize: Int

    static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    /// Splits `dir/KEY.EXT.MORE` into (`dir/KEY`, `ext.more`), lowercasing the extension.
    static func splitKey(_ name: String) -> (key: String, ext: String)? {
        let slash = name.lastIndex(of: "/")
        let baseStart = slash.map { name.index(after: $0) } ?? name.startIndex
        guard let dot = name[baseStart...].firstIndex(of: ".") else { return nil }
        let key = String(name[..<dot])
        let ext = String(name[name.index(after: dot)...]).lowercased()
        if name[baseStart...].hasPrefix("__") { return nil }
        return (key, ext)
    }

    /// Groups the members of a scanned tar.
    public init(scan: TarScan) {
        var entries: [Entry] = []
        var seen = Set<String>()
        for m in scan.members {
            guard let (key, ext) = WebDatasetShard.splitKey(m.name) else { continue }
            if entries.last?.key != key {
                var e = Entry(key: key)
                if seen.contains(key) { e.bad = (.duplicateKey, "key \(key) appears again later in the shard") }
                seen.insert(key)
                entries.append(e)
            }
            var e = entries.removeLast()
            var dup = false
            if WebDatasetShard.imageExtensions.contains(ext) {
                dup = e.image != nil
                e.image = m
            } else if ext == "txt" {
                dup = e.caption != nil
                e.caption = m
            } else if ext == "json" {
                dup = e.json != nil
                e.json = m
            }
            if dup && e.bad == nil { e.bad = (.duplicateKey, "key \(key) has two \(ext) members") }
            entries.append(e)
        }
        if let p = scan.problem {
            if p.kind == .truncatedMember, let (key, _) = WebDatasetShard.splitKey(p.name) {
                if entries.last?.key == key {
                    entries[entries.count - 1].bad = (p.kind, p.message)
                } else {
                    entries.append(Entry(key: key, bad: (p.kind, p.message)))
                }
            } else {
                entries.append(Entry(key: p.name, bad: (p.kind, p.message)))
            }
        }
        for i in entries.indices where entries[i].bad == nil {
            if entries[i].image == nil {
                entries[i].bad = (.missingImage, "no .jpg/.jpeg/.png member for key \(entries[i].key)")
            } else if entries[i].caption == nil {
                entries[i].bad = (.missingCaption, "no .txt member for key \(entries[i].key)")
            }
        }
        self.entries = entries
        fileSize = scan.fileSize
    }

    init(key: String) { self.entries = []; fileSize = 0 }
}

extension WebDatasetShard.Entry {
    init(key: String, bad: (kind: BadSampleKind, message: String)? = nil) {
        self.key = key
        self.bad = bad
    }
}
