import ALBEF
import Foundation
import NN
import Tensor

/// Selfcheck of kind `pytorch-checkpoints` (fixture `pth-visible` and its held-out variants):
/// real `torch.save` files read with `TorchCheckpoint`, compared with `expected.safetensors` and
/// `fixture.json`.
///
/// - every tensor of `expected.safetensors` (`albef/<key>` → `<albef file>['model'][key]`,
///   `optim/<i>/<name>` → `['optimizer']['state'][i][name]`, `bert/<key>` → the legacy file's
///   root, `deit/<key>` → `<deit file>['model'][key]`) bit for bit in its stored dtype, and its
///   float32 conversion equal to the independent one of `SafeTensorsFile`; a name that cannot be
///   produced fails;
/// - every tensor's on-disk layout (`tensor_layouts`: storage key/type/numel, offset, shape,
///   stride), the storage-sharing groups, the zip records' data offsets and the legacy storage
///   records' offsets;
/// - the non-tensor values (`config`, `epoch`, `lr_scheduler`, `optimizer.param_groups`,
///   `top_level_keys`) structurally against the JSON and textually against Python's `repr`;
/// - files marked `must_refuse` are refused by the allowlist (nothing executed);
/// - ALBEF's `init_deit`: the interpolated `pos_embed`, missing/unexpected keys, and the ViT's
///   output on `deit_init/images`.
public enum PyTorchCheckpointSelfCheck {
    public static func run(directory dir: URL, report: SelfCheckReport) throws {
        let json = try readFixtureJSON(dir)
        let expectedPath = dir.appendingPathComponent("expected.safetensors").path
        let expected = try SafeTensorsFile(path: expectedPath)
        let expectedRaw = try RawSafeTensors(path: expectedPath)
        let files = json["files"] as? [String: Any] ?? [:]

        // Refusals first: listed in `files` with must_refuse, or in `refuse`.
        var refuse = Set(files.compactMap { k, v in ((v as? [String: Any])?["must_refuse"] as? Bool) == true ? k : nil })
        for r in json["refuse"] as? [Any] ?? [] {
            if let s = r as? String { refuse.insert(s) }
            if let d = r as? [String: Any], let f = (d["file"] ?? d["name"] ?? d["path"]) as? String { refuse.insert(f) }
        }
        for name in refuse.sorted() {
            let p = dir.appendingPathComponent(name).path
            do {
                _ = try TorchCheckpoint(path: p)
                report.record(name: "refuse \(name) (it loaded)", passed: false)
            } catch let e as TorchCheckpointError where e.isRefusal {
                report.note("refused as expected: \(e)")
                report.record(name: "refuse \(name)", passed: true)
            } catch {
                report.note("\(name): failed, but not as a refusal: \(error)")
                report.record(name: "refuse \(name) (not refused by the allowlist)", passed: false)
            }
        }

        // Load every other checkpoint the fixture describes.
        var checkpoints: [String: TorchCheckpoint] = [:]
        for name in json.keys.sorted() where TorchCheckpoint.handles(name) && !refuse.contains(name) {
            checkpoints[name] = try TorchCheckpoint(path: dir.appendingPathComponent(name).path)
            report.note("\(name): \(checkpoints[name]!.format) format, \(checkpoints[name]!.storages.count) storages")
        }
        func file(prefix: String) -> TorchCheckpoint? {
            checkpoints.first { URL(fileURLWithPath: $0.key).deletingPathExtension().lastPathComponent.hasPrefix(prefix) }?.value
        }

        // 1. Every expected tensor, bit for bit and as float32.
        var groups: [String: (total: Int, bad: [String])] = [:]
        for key in expected.keys {
            let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { groups["?", default: (0, [])].total += 1; groups["?"]!.bad.append(key); continue }
            let (prefix, rest) = (parts[0], parts[1])
            if prefix == "deit_init" { continue }  // checked with the DeiT initialisation below
            let source: (TorchCheckpoint, String)?
            switch prefix {
            case "albef": source = file(prefix: "albef").map { ($0, "model/" + rest) }
            case "optim": source = file(prefix: "albef").map { ($0, "optimizer/state/" + rest) }
            case "bert": source = file(prefix: "bert").map { ($0, rest) }
            case "deit": source = file(prefix: "deit").map { ($0, "model/" + rest) }
            default: source = nil
            }
            groups[prefix, default: (0, [])].total += 1
            guard let (ck, path) = source else { groups[prefix]!.bad.append("\(key) (no file for prefix '\(prefix)')"); continue }
            guard let t = ck.value(at: path)?.tensor else { groups[prefix]!.bad.append("\(key) (no tensor at \(path))"); continue }
            let info = expected.entries[key]!
            let why: String?
            if info.dtype != t.dtype.safetensorsName { why = "dtype \(t.dtype.safetensorsName) vs \(info.dtype)" }
            else if info.shape != t.shape { why = "shape \(t.shape) vs \(info.shape)" }
            else if t.contiguousBytes() != expectedRaw.bytes(info) { why = "bytes differ" }
            else if t.dtype.isFloatingPoint || t.dtype == .int64 || t.dtype == .int32,
                    try t.floats().map(\.bitPattern) != expected.floats(key).map(\.bitPattern) { why = "float32 conversion differs" }
            else { why = nil }
            if let w = why { groups[prefix]!.bad.append("\(key): \(w)") }
        }
        for (prefix, g) in groups.sorted(by: { $0.key < $1.key }) {
            for b in g.bad.prefix(10) { report.note("  mismatch \(b)") }
            report.record(name: "tensors \(prefix)/* bit-exact in stored dtype and as float32 (\(g.total - g.bad.count)/\(g.total))", passed: g.bad.isEmpty)
        }

        for (name, ck) in checkpoints.sorted(by: { $0.key < $1.key }) {
            guard let f = json[name] as? [String: Any] else { continue }
            try checkLayouts(name, ck, f, report: report)
            try checkValues(name, ck, f, report: report)
        }

        // 4. ALBEF's init_deit.
        if let deitName = checkpoints.keys.first(where: { $0.hasPrefix("deit") }), let f = json[deitName] as? [String: Any],
           let cfg = f["albef_visual_encoder"] as? [String: Any] {
            try checkDeiTInit(checkpoints[deitName]!, f, cfg, expected: expected, report: report)
        } else if expected.keys.contains(where: { $0.hasPrefix("deit_init/") }) {
            report.record(name: "deit_init (fixture lacks the deit file or its albef_visual_encoder config)", passed: false)
        }
    }

    /// 2. Layouts, sharing and container records.
    static func checkLayouts(_ name: String, _ ck: TorchCheckpoint, _ f: [String: Any], report: SelfCheckReport) throws {
        if let layouts = f["tensor_layouts"] as? [String: [String: Any]] {
            var bad: [String] = []
            for (path, l) in layouts {
                guard let t = ck.value(at: path)?.tensor else { bad.append("\(path): no tensor"); continue }
                let want: [(String, Bool)] = [
                    ("storage_key", (l["storage_key"] as? String) == t.storage.key),
                    ("dtype", (l["dtype"] as? String) == t.dtype.rawValue),
                    ("storage_type", (l["storage_type"] as? String).map { TorchDType(storageClass: String($0.split(separator: ".").last ?? "")) == t.dtype } ?? true),
                    ("storage_numel", num(l["storage_numel"]).map { Int($0) } == t.storage.numel),
                    ("storage_offset", num(l["storage_offset"]).map { Int($0) } == t.offset),
                    ("shape", (l["shape"] as? [Any])?.compactMap(num).map { Int($0) } == t.shape),
                    ("stride", (l["stride"] as? [Any])?.compactMap(num).map { Int($0) } == t.stride),
                ]
                for (k, ok) in want where !ok { bad.append("\(path): \(k)") }
            }
            for b in bad.prefix(10) { report.note("  layout \(b)") }
            report.record(name: "\(name): tensor layouts (\(layouts.count - Set(bad.map { $0.components(separatedBy: ":")[0] }).count)/\(layouts.count))", passed: bad.isEmpty)
        }
        if let shared = f["shared_storages"] as? [[String: Any]] {
            var mine: [ObjectIdentifier: Set<String>] = [:]
            try TorchCheckpoint.walkTensors(ck.root, prefix: "") { p, t in mine[ObjectIdentifier(t.storage), default: []].insert(p) }
            let got = Set(mine.values.filter { $0.count > 1 })
            let want = Set(shared.compactMap { ($0["paths"] as? [String]).map(Set.init) })
            if got != want { report.note("  sharing: got \(got.map { $0.sorted() }) want \(want.map { $0.sorted() })") }
            report.record(name: "\(name): storage sharing (\(want.count) groups)", passed: got == want)
        }
        if let records = f["records"] as? [[String: Any]] {
            let zip = try StoredZip(path: ck.path, data: try Data(contentsOf: URL(fileURLWithPath: ck.path), options: .alwaysMapped))
            let bad = records.filter { r in
                guard let n = r["name"] as? String, let e = zip.entry(n) else { return true }
                return num(r["data_offset"]).map { Int($0) } != e.dataOffset || num(r["size"]).map { Int($0) } != e.size
            }
            report.record(name: "\(name): zip records and data offsets (\(records.count - bad.count)/\(records.count))", passed: bad.isEmpty)
        }
        if let records = f["storage_records"] as? [[String: Any]] {
            let bad = records.filter { r in
                guard let k = r["key"] as? String, let s = ck.storages[k] else { return true }
                return num(r["data_offset"]).map { Int($0) } != s.byteOffset || num(r["numel"]).map { Int($0) } != s.numel
            }
            report.record(name: "\(name): legacy storage records (\(records.count - bad.count)/\(records.count))", passed: bad.isEmpty)
        }
    }

    /// 3. Non-tensor values.
    static func checkValues(_ name: String, _ ck: TorchCheckpoint, _ f: [String: Any], report: SelfCheckReport) throws {
        if let keys = f["top_level_keys"] as? [String] {
            report.record(name: "\(name): top-level keys \(keys)", passed: ck.root.dict?.stringKeys == keys)
        }
        var checks: [(String, Any)] = []
        for k in ["config", "epoch", "lr_scheduler"] { if let v = f[k] { checks.append((k, v)) } }
        if let o = f["optimizer"] as? [String: Any], let pg = o["param_groups"] { checks.append(("optimizer/param_groups", pg)) }
        for (path, want) in checks {
            guard let v = ck.value(at: path) else { report.record(name: "\(name): \(path) (absent)", passed: false); continue }
            let diff = jsonDifference(v, want, at: path)
            if let d = diff { report.note("  \(d)") }
            report.record(name: "\(name): \(path) equals fixture.json", passed: diff == nil)
        }
        var reprs: [(String, String)] = f.compactMap { k, v in k.hasSuffix("_repr") ? (String(k.dropLast(5)), v as? String ?? "") : nil }
        if let o = f["optimizer"] as? [String: Any] {
            reprs += o.compactMap { k, v in k.hasSuffix("_repr") ? ("optimizer/" + String(k.dropLast(5)), v as? String ?? "") : nil }
        }
        for (path, want) in reprs.sorted(by: { $0.0 < $1.0 }) {
            let got = ck.value(at: path)?.repr
            if got != want { report.note("  repr \(path):\n    got  \(got ?? "nil")\n    want \(want)") }
            report.record(name: "\(name): repr(\(path)) as Python prints it", passed: got == want)
        }
        if let o = f["optimizer"] as? [String: Any], let st = o["step_storage"] as? [String: Any], let n = num(o["num_params"]).map({ Int($0) }) {
            var bad = 0
            let values = (st["values"] as? [Any])?.compactMap(num).map { Float($0) } ?? []
            for i in 0..<n {
                guard let t = ck.value(at: "optimizer/state/\(i)/step")?.tensor, "torch." + t.dtype.rawValue == (st["dtype"] as? String),
                      t.shape == (st["shape"] as? [Any])?.compactMap(num).map({ Int($0) }), t.floats() == values else { bad += 1; continue }
            }
            report.record(name: "\(name): optimizer step tensors (\(n - bad)/\(n))", passed: bad == 0)
        }
    }

    /// 4. DeiT → ALBEF ViT with pos_embed interpolation, then a forward pass.
    static func checkDeiTInit(_ ck: TorchCheckpoint, _ f: [String: Any], _ cfg: [String: Any], expected: SafeTensorsFile, report: SelfCheckReport) throws {
        func i(_ k: String) throws -> Int {
            guard let v = num(cfg[k]) else { throw SelfCheckError.invalid("fixture.json: albef_visual_encoder.\(k) missing") }
            return Int(v)
        }
        let vit = VisionTransformer(imageSize: try i("img_size"), patchSize: try i("patch_size"), width: try i("embed_dim"), depth: try i("depth"),
                                    heads: try i("num_heads"), mlpRatio: Float(num(cfg["mlp_ratio"]) ?? 4), eps: Float(num(cfg["layer_norm_eps"]) ?? 1e-6))
        let sd = try TorchStateDict(checkpoint: ck, key: "model")
        let r = try vit.loadDeiT(sd)
        report.note("deit_init: \(r.summary)")
        let init_ = f["init_deit"] as? [String: Any] ?? [:]
        report.record(name: "deit_init missing keys \(r.missing) == \(init_["missing_keys"] as? [String] ?? [])",
                      passed: r.missing.sorted() == (init_["missing_keys"] as? [String] ?? []).sorted())
        report.record(name: "deit_init unexpected keys \(r.unexpected) == \(init_["unexpected_keys"] as? [String] ?? [])",
                      passed: r.unexpected.sorted() == (init_["unexpected_keys"] as? [String] ?? []).sorted())
        for k in ["deit_init/pos_embed_interpolated", "deit_init/images", "deit_init/visual_encoder_out"] where expected.entries[k] == nil {
            report.record(name: "\(k) (absent from expected.safetensors)", passed: false)
        }
        for key in expected.keys where key.hasPrefix("deit_init/") {
            switch key {
            case "deit_init/pos_embed_interpolated":
                report.compare("deit_init/pos_embed_interpolated", vit.posEmbed.scalars, try expected.floats(key), atol: 1e-6, rtol: 1e-5)
            case "deit_init/visual_encoder_out":
                let images = try expected.tensor("deit_init/images")
                let out = withNoGrad { vit(images) }
                report.compare("deit_init/visual_encoder_out", out.scalars, try expected.floats(key), atol: 1e-5, rtol: 1e-5)
            case "deit_init/images": break
            default: report.record(name: "\(key) (no such quantity to produce)", passed: false)
            }
        }
    }

    /// Where `v` differs from the JSON value `j` (ints vs floats and tuples vs lists are
    /// checked by the repr comparison), or nil.
    static func jsonDifference(_ v: PickleValue, _ j: Any, at path: String) -> String? {
        switch v {
        case .none: return j is NSNull ? nil : "\(path): None vs \(j)"
        case .bool(let b): return (j as? Bool) == b && !(j is Int && !(j is Bool)) ? nil : "\(path): \(b) vs \(j)"
        case .int(let i): return num(j) == Double(i) && (j as? NSNumber)?.int64Value == i ? nil : "\(path): \(i) vs \(j)"
        case .float(let d): return num(j) == d ? nil : "\(path): \(d) vs \(j)"
        case .string(let s): return (j as? String) == s ? nil : "\(path): \(s.debugDescription) vs \(j)"
        case .list, .tuple:
            guard let a = j as? [Any], let items = v.items, a.count == items.count else { return "\(path): \(v.repr.prefix(60)) vs \(j)" }
            for (k, x) in items.enumerated() { if let d = jsonDifference(x, a[k], at: "\(path)/\(k)") { return d } }
            return nil
        case .dict(let d):
            guard let o = j as? [String: Any] else { return "\(path): dict vs \(j)" }
            guard d.count == o.count else { return "\(path): \(d.count) keys vs \(o.count)" }
            for (k, x) in d.pairs {
                let ks = k.string ?? k.int.map(String.init) ?? k.repr
                guard let y = o[ks] else { return "\(path): key \(ks) not in fixture.json" }
                if let e = jsonDifference(x, y, at: "\(path)/\(ks)") { return e }
            }
            return nil
        default: return "\(path): \(v.repr.prefix(60)) is not plain data"
        }
    }
}

/// Raw bytes of a safetensors file's tensors (the stored bytes, for bit-exact comparisons).
struct RawSafeTensors {
    let data: Data
    let dataStart: Int
    init(path: String) throws {
        data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i)) }
        dataStart = 8 + Int(n)
    }
    func bytes(_ info: SafeTensorInfo) -> [UInt8] {
        [UInt8](data[(data.startIndex + dataStart + info.begin)..<(data.startIndex + dataStart + info.end)])
    }
}
