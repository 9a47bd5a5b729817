import Foundation
import Tensor

/// What loading a state dict found: keys the model wanted but the file lacks, keys the file has
/// that the model does not, shape mismatches, tied tensors filled from their partner, dtype
/// conversions. Mirrors mlx's verify report / PyTorch's `load_state_dict` return value.
public struct LoadReport: CustomStringConvertible, Sendable {
    public var loaded: [String] = []
    public var missing: [String] = []
    public var unexpected: [String] = []
    public var shapeMismatches: [(key: String, expected: [Int], got: [Int])] = []
    public var tiedFilled: [String] = []
    public var converted: [(key: String, dtype: String)] = []

    public var isClean: Bool { missing.isEmpty && unexpected.isEmpty && shapeMismatches.isEmpty }

    public var summary: String {
        var parts: [String] = ["\(loaded.count) loaded"]
        if !missing.isEmpty { parts.append("\(missing.count) missing \(missing.prefix(8))\(missing.count > 8 ? "…" : "")") }
        if !unexpected.isEmpty { parts.append("\(unexpected.count) unexpected \(unexpected.prefix(8))\(unexpected.count > 8 ? "…" : "")") }
        if !shapeMismatches.isEmpty {
            parts.append("\(shapeMismatches.count) mis-shaped " + shapeMismatches.prefix(5).map { "\($0.key): file \($0.got) vs model \($0.expected)" }.joined(separator: "; "))
        }
        if !tiedFilled.isEmpty { parts.append("\(tiedFilled.count) tied (filled from their partner)") }
        if !converted.isEmpty { parts.append("\(converted.count) converted to float32") }
        return parts.joined(separator: ", ")
    }

    public var description: String { summary }
}

extension Module {
    /// Loads tensors from `file` into this module by key.
    ///
    /// - Parameters:
    ///   - keyMap: maps a model key to the file key (e.g. strip `text_encoder.` and `bert.` to read a
    ///     plain BERT file); return nil to skip a model key. Identity by default.
    ///   - strict: throw `CheckpointError.keyMismatch` unless every key matched with the right shape.
    ///   - include: only model keys passing this filter are considered (e.g. a prefix).
    /// Tied tensors (the same tensor under two keys) are filled once; a missing alias of a loaded
    /// partner is reported in `tiedFilled`, not as missing.
    @discardableResult
    public func load(from file: WeightFile, keyMap: (String) -> String? = { $0 }, strict: Bool = true,
                     include: (String) -> Bool = { _ in true }) throws -> LoadReport {
        var report = LoadReport()
        var used = Set<String>()
        var filled = Set<ObjectIdentifier>()
        let entries = stateEntries().filter { include($0.0) }
        var pendingTied: [(String, Tensor)] = []
        for (key, entry) in entries {
            guard let fk = keyMap(key) else { continue }
            guard let infoShape = file.shape(of: fk), let infoDType = file.dtype(of: fk) else {
                if case .float(let t) = entry { pendingTied.append((key, t)) } else { report.missing.append(key) }
                continue
            }
            used.insert(fk)
            guard infoShape == entry.shape || (infoShape.reduce(1, *) == entry.shape.reduce(1, *) && entry.shape.count == 0) else {
                report.shapeMismatches.append((key, entry.shape, infoShape))
                continue
            }
            switch entry {
            case .float(let t):
                if filled.contains(ObjectIdentifier(t)) { continue }
                let v = try file.floats(fk)
                v.withUnsafeBufferPointer { t.data.update(from: $0.baseAddress!, count: t.count) }
                filled.insert(ObjectIdentifier(t))
                if infoDType != "F32" { report.converted.append((key, infoDType)) }
            case .int(let b):
                b.value = try file.ints(fk)
            }
            report.loaded.append(key)
        }
        for (key, t) in pendingTied {
            if filled.contains(ObjectIdentifier(t)) { report.tiedFilled.append(key) } else { report.missing.append(key) }
        }
        let mappedKeys = Set(entries.compactMap { keyMap($0.0) })
        report.unexpected = file.keys.filter { !used.contains($0) && !mappedKeys.contains($0) }
        if strict && !report.isClean { throw CheckpointError.keyMismatch(report: report, path: file.path) }
        return report
    }

    /// Saves every state entry (parameters + buffers) to a safetensors file that
    /// `safetensors.torch.load_file` + `load_state_dict(strict=True)` accept: like PyTorch's
    /// `state_dict()`, a tied tensor appears under each of its keys (the MLM decoder and the word
    /// embeddings), unless `tiedOnce` (the fixtures' convention; loading fills the alias).
    public func save(to path: String, metadata: [String: String] = [:], tiedOnce: Bool = false) throws {
        var seen = Set<ObjectIdentifier>()
        let items = stateEntries().filter { _, e in
            if case .float(let t) = e, tiedOnce { return seen.insert(ObjectIdentifier(t)).inserted }
            return true
        }
        try SafeTensorsFile.write(items, to: path, metadata: metadata)
    }
}
