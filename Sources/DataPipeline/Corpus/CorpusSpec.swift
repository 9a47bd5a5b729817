import Corpus
import Foundation

/// Turns a corpus spec into a list of files.
///
/// Accepted: brace ranges and lists as webdataset/braceexpand (`data/{00000..00127}.tar`, zero
/// padding kept; `data/{a,b}.tar`); several items separated by `::` or whitespace; a directory
/// (its `*.tar` files, sorted, or else its `*.json` files); `@list.txt` (one path per line).
/// The format is `webdataset` when the files end in `.tar`, `json` when they end in `.json`.
public enum CorpusSpec {
    public typealias Format = CorpusIndex.Format

    /// The expanded files and their format.
    public static func resolve(_ spec: String) throws -> (files: [String], format: Format) {
        var files: [String] = []
        let items = spec.components(separatedBy: "::").flatMap { $0.split(whereSeparator: \.isWhitespace).map(String.init) }
        for item in items {
            if item.hasPrefix("@") {
                let listPath = String(item.dropFirst())
                guard let text = try? String(contentsOfFile: listPath, encoding: .utf8) else {
                    throw DataError.missingFile(path: listPath)
                }
                let dir = (listPath as NSString).deletingLastPathComponent
                for line in text.split(whereSeparator: \.isNewline) {
                    let p = line.trimmingCharacters(in: .whitespaces)
                    if p.isEmpty || p.hasPrefix("#") { continue }
                    files.append(p.hasPrefix("/") || dir.isEmpty ? p : dir + "/" + p)
                }
                continue
            }
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: item, isDirectory: &isDir), isDir.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: item)) ?? []
                var picked = names.filter { $0.hasSuffix(".tar") }.sorted()
                if picked.isEmpty { picked = names.filter { $0.hasSuffix(".json") && $0 != "index.json" }.sorted() }
                files.append(contentsOf: picked.map { item + "/" + $0 })
                continue
            }
            files.append(contentsOf: try expandBraces(item))
        }
        guard !files.isEmpty else { throw DataError.badCorpusSpec(spec: spec, reason: "no files") }
        let tars = files.filter { $0.hasSuffix(".tar") }.count
        let jsons = files.filter { $0.hasSuffix(".json") }.count
        if tars == files.count { return (files, .webdataset) }
        if jsons == files.count { return (files, .json) }
        throw DataError.badCorpusSpec(spec: spec, reason: "mixes .tar and .json files or has other extensions")
    }

    /// Bash/braceexpand-style expansion of `{a..b}` (numeric, zero-padded to the wider bound) and
    /// `{x,y,z}`, leftmost first, recursively.
    public static func expandBraces(_ s: String) throws -> [String] {
        guard let open = s.firstIndex(of: "{") else { return [s] }
        var depth = 0
        var close: String.Index? = nil
        var i = open
        while i < s.endIndex {
            if s[i] == "{" { depth += 1 }
            if s[i] == "}" { depth -= 1; if depth == 0 { close = i; break } }
            i = s.index(after: i)
        }
        guard let c = close else { throw DataError.badCorpusSpec(spec: s, reason: "unbalanced brace") }
        let head = String(s[..<open])
        let body = String(s[s.index(after: open)..<c])
        let tail = String(s[s.index(after: c)...])
        var options: [String] = []
        if let range = body.range(of: ".."), !body.contains(","),
           let lo = Int(body[..<range.lowerBound]), let hi = Int(body[range.upperBound...]) {
            let width = max(body[..<range.lowerBound].count, body[range.upperBound...].count)
            let pad = body.hasPrefix("0") || body[range.upperBound...].hasPrefix("0")
            let step = lo <= hi ? 1 : -1
            for v in stride(from: lo, through: hi, by: step) {
                let t = String(v)
                options.append(pad && t.count < width ? String(repeating: "0", count: width - t.count) + t : t)
            }
        } else {
            var parts: [String] = []
            var cur = ""
            var d = 0
            for ch in body {
                if ch == "{" { d += 1 }
                if ch == "}" { d -= 1 }
                if ch == "," && d == 0 { parts.append(cur); cur = "" } else { cur.append(ch) }
            }
            parts.append(cur)
            for p in parts { options.append(contentsOf: try expandBraces(p)) }
        }
        var out: [String] = []
        for o in options { for t in try expandBraces(tail) { out.append(head + o + t) } }
        return out
    }
}
