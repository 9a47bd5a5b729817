import Foundation

/// Errors reading a PyTorch checkpoint. Every case names the file.
public enum TorchCheckpointError: Error, CustomStringConvertible {
    /// Truncated, damaged, or not a torch checkpoint.
    case badFile(path: String, message: String)
    /// The pickle names a global outside `SafeUnpickler.allowedGlobals`.
    case forbiddenGlobal(path: String, name: String, offset: Int)
    /// The pickle uses an opcode that only serves to construct arbitrary objects.
    case forbiddenOpcode(path: String, opcode: String, offset: Int)
    /// Readable, but no state dict where one was asked for.
    case noStateDict(path: String, message: String)

    public var description: String {
        switch self {
        case let .badFile(p, m):
            return "\(p): not a readable PyTorch checkpoint: \(m). HINT: the file is truncated or damaged; download or copy it again (compare its size/sha256 with the source)."
        case let .forbiddenGlobal(p, n, o):
            return "\(p): refused: the pickle (byte \(o)) names the global '\(n)', which is not a tensor, storage, dtype or plain container. A checkpoint holds data only; this one would run code in Python's pickle. Nothing was executed. HINT: if you trust the file, re-save just its tensors (torch.save(model.state_dict(), ...)) or convert it to safetensors in Python."
        case let .forbiddenOpcode(p, op, o):
            return "\(p): refused: the pickle (byte \(o)) uses opcode \(op), which constructs arbitrary objects; torch.save never writes it. Nothing was executed."
        case let .noStateDict(p, m): return "\(p): \(m)"
        }
    }

    /// True for the refusals (as opposed to damage).
    public var isRefusal: Bool {
        switch self {
        case .forbiddenGlobal, .forbiddenOpcode: return true
        default: return false
        }
    }
}

/// A file written by `torch.save`, parsed without Python and without executing anything.
///
/// Two container formats (PyTorch `torch/serialization.py`):
/// - **zip** (torch ≥ 1.6, `_use_new_zipfile_serialization=True`): a stored zip (`StoredZip`) whose
///   entries sit under one folder (`<prefix>/`, taken from the first entry): `data.pkl` (the object
///   pickle), `byteorder` (`little`), `data/<key>` (raw storage bytes), `version`, …. A storage is
///   the persistent id `('storage', torch.XStorage, key, location, numel)`.
/// - **legacy** (`_use_new_zipfile_serialization=False`, e.g. the original `pytorch_model.bin`):
///   five pickles back to back — the magic number `0x1950a86a20f9469cfc6c`, the protocol version
///   1001, `sys_info` (`little_endian` must be True), the object pickle (persistent id
///   `('storage', torch.XStorage, key, location, numel, view_metadata)`, `view_metadata` =
///   `(view_key, offset, size)` or None), the list of storage keys — then for each key in that
///   order an int64 element count and the raw bytes.
/// Tensors are `_rebuild_tensor_v2(storage, offset, size, stride, …)` views (`TorchTensor`); the
/// same key yields one `TorchStorage` object, so tied weights stay shared.
public final class TorchCheckpoint {
    public let path: String
    /// The unpickled object (`{'model': ..., 'optimizer': ..., 'config': ..., 'epoch': ...}` for
    /// ALBEF, an OrderedDict state_dict for `pytorch_model.bin`).
    public let root: PickleValue
    /// `zip` or `legacy`.
    public let format: String
    /// Storages by key.
    public let storages: [String: TorchStorage]
    let data: Data

    public static let legacyMagic: [UInt8] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]  // LE of 0x1950a86a20f9469cfc6c

    /// True for names that should be read with this class (`.pth`, `.pt`, `.bin`, `.ckpt`).
    public static func handles(_ path: String) -> Bool {
        ["pth", "pt", "bin", "ckpt", "tar"].contains(URL(fileURLWithPath: path).pathExtension.lowercased())
    }

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { throw TorchCheckpointError.badFile(path: path, message: "file not found") }
        let d: Data
        do { d = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw TorchCheckpointError.badFile(path: path, message: "cannot read (\(error.localizedDescription))")
        }
        data = d
        var stores: [String: TorchStorage] = [:]
        if StoredZip.looksLikeZip(d) {
            format = "zip"
            let zip = try StoredZip(path: path, data: d)
            guard let first = zip.entries.first, let slash = first.name.firstIndex(of: "/") else {
                throw TorchCheckpointError.badFile(path: path, message: "zip has no entries under a folder (torch.save writes <name>/data.pkl)")
            }
            let prefix = String(first.name[...slash])
            guard let pkl = zip.entry(prefix + "data.pkl") else {
                throw TorchCheckpointError.badFile(path: path, message: "zip has no \(prefix)data.pkl; it is not a torch.save archive")
            }
            if let bo = zip.entry(prefix + "byteorder") {
                let s = String(decoding: try zip.contents(bo), as: UTF8.self)
                guard s == "little" else { throw TorchCheckpointError.badFile(path: path, message: "byteorder '\(s)': only little-endian checkpoints are supported") }
            }
            let un = SafeUnpickler(path: path) { pid in
                let (key, dtype, numel, _) = try Self.storageID(pid, path: path)
                if let s = stores[key] { return .storage(TorchStorageRef(storage: s, offset: 0, numel: s.numel)) }
                guard let e = zip.entry(prefix + "data/" + key) else {
                    throw TorchCheckpointError.badFile(path: path, message: "storage '\(key)' has no zip entry \(prefix)data/\(key)")
                }
                let r = try zip.range(of: e)
                let (bytes, ovf) = numel.multipliedReportingOverflow(by: dtype.elementSize)
                guard !ovf, numel >= 0, bytes <= r.count else {
                    throw TorchCheckpointError.badFile(path: path, message: "storage '\(key)' claims \(numel) \(dtype.rawValue) elements but its entry holds \(r.count) bytes")
                }
                let s = TorchStorage(key: key, dtype: dtype, numel: numel, source: d, byteOffset: r.lowerBound)
                stores[key] = s
                return .storage(TorchStorageRef(storage: s, offset: 0, numel: numel))
            }
            let pr = try zip.range(of: pkl)
            root = try d.withUnsafeBytes { raw in
                try un.load(UnsafeRawBufferPointer(rebasing: raw[pr]), start: 0).0
            }
        } else {
            format = "legacy"
            root = try d.withUnsafeBytes { raw -> PickleValue in
                let plain = SafeUnpickler(path: path) { _ in throw TorchCheckpointError.badFile(path: path, message: "unexpected persistent id in a header pickle") }
                let (magic, e1): (PickleValue, Int)
                do { (magic, e1) = try plain.load(raw, start: 0) } catch let e as TorchCheckpointError where !e.isRefusal {
                    throw TorchCheckpointError.badFile(path: path, message: "neither a zip archive nor a legacy torch file (the first pickle does not parse: \(e))")
                }
                guard case .bigInt(let m) = magic, m == Self.legacyMagic else {
                    throw TorchCheckpointError.badFile(path: path, message: "neither a zip archive nor a legacy torch file (no torch magic number at the start)")
                }
                let (proto, e2) = try plain.load(raw, start: e1)
                guard proto.int == 1001 else { throw TorchCheckpointError.badFile(path: path, message: "legacy protocol version \(proto.repr), expected 1001") }
                let (sysInfo, e3) = try plain.load(raw, start: e2)
                if case .bool(false)? = sysInfo.dict?["little_endian"] {
                    throw TorchCheckpointError.badFile(path: path, message: "written on a big-endian machine; only little-endian checkpoints are supported")
                }
                var views: [String: TorchStorageRef] = [:]
                let un = SafeUnpickler(path: path) { pid in
                    let (key, dtype, numel, view) = try Self.storageID(pid, path: path)
                    let s: TorchStorage
                    if let old = stores[key] { s = old } else {
                        s = TorchStorage(key: key, dtype: dtype, numel: numel, source: d, byteOffset: nil)
                        stores[key] = s
                    }
                    if let v = view?.items, v.count == 3, let vk = v[0].string, let off = v[1].int, let n = v[2].int {
                        let ref = views[vk] ?? TorchStorageRef(storage: s, offset: off, numel: n)
                        views[vk] = ref
                        return .storage(ref)
                    }
                    return .storage(TorchStorageRef(storage: s, offset: 0, numel: s.numel))
                }
                let (obj, e4) = try un.load(raw, start: e3)
                let (keysV, e5) = try plain.load(raw, start: e4)
                guard let keys = keysV.items?.compactMap(\.string) else {
                    throw TorchCheckpointError.badFile(path: path, message: "legacy storage key list is not a list of strings")
                }
                var p = e5
                for k in keys {
                    guard p + 8 <= raw.count else {
                        throw TorchCheckpointError.badFile(path: path, message: "storage record '\(k)' at byte \(p) is cut off (file has \(raw.count) bytes; truncated)")
                    }
                    let n = Int(raw.loadUnaligned(fromByteOffset: p, as: Int64.self))
                    guard let s = stores[k] else {
                        throw TorchCheckpointError.badFile(path: path, message: "storage record '\(k)' is not referenced by the object pickle")
                    }
                    let (bytes, ovf) = n.multipliedReportingOverflow(by: s.dtype.elementSize)
                    guard n >= 0, !ovf, n == s.numel else {
                        throw TorchCheckpointError.badFile(path: path, message: "storage record '\(k)' at byte \(p) holds \(n) elements, the pickle says \(s.numel)")
                    }
                    guard bytes <= raw.count - p - 8 else {
                        throw TorchCheckpointError.badFile(path: path, message: "storage '\(k)' (\(bytes) bytes at \(p + 8)) runs past the end of the file (\(raw.count) bytes; truncated)")
                    }
                    s.byteOffset = p + 8
                    p += 8 + bytes
                }
                return obj
            }
        }
        storages = stores
        // Every tensor must lie inside its storage: check once, here, so later reads cannot fail.
        do {
            try Self.walkTensors(root, prefix: "") { name, t in
                t.origin = name
                try t.validate(path: path)
            }
        } catch TorchCheckpointError.badFile(path: "", let m) { throw TorchCheckpointError.badFile(path: path, message: m) }
    }

    /// Parses `('storage', torch.XStorage, key, location, numel[, view_metadata])`.
    static func storageID(_ pid: PickleValue, path: String) throws -> (String, TorchDType, Int, PickleValue?) {
        guard let f = pid.items, f.count >= 5, f[0].string == "storage" else {
            throw TorchCheckpointError.badFile(path: path, message: "persistent id \(pid.repr.prefix(80)) is not a storage")
        }
        guard case .global(let m, let n) = f[1], m == "torch" || m == "torch.storage", let dt = TorchDType(storageClass: n) else {
            throw TorchCheckpointError.badFile(path: path, message: "persistent id names storage type \(f[1].repr), not a torch.*Storage")
        }
        let key = f[2].string ?? f[2].int.map(String.init)
        guard let k = key, let numel = f[4].int, numel >= 0 else {
            throw TorchCheckpointError.badFile(path: path, message: "persistent id \(pid.repr.prefix(80)) has no key or element count")
        }
        return (k, dt, numel, f.count > 5 ? f[5] : nil)
    }

    /// Visits every tensor under `v`, naming it by its path of dict keys / list indices joined with `/`.
    public static func walkTensors(_ v: PickleValue, prefix: String, depth: Int = 0, _ body: (String, TorchTensor) throws -> Void) throws {
        guard depth < 200 else {
            throw TorchCheckpointError.badFile(path: "", message: "objects nested deeper than 200 levels at '\(prefix.prefix(200))' (a self-referencing or damaged pickle)")
        }
        func join(_ k: String) -> String { prefix.isEmpty ? k : prefix + "/" + k }
        switch v {
        case .tensor(let t): try body(prefix, t)
        case .dict(let d):
            for (k, x) in d.pairs { try walkTensors(x, prefix: join(k.string ?? k.int.map(String.init) ?? k.repr), depth: depth + 1, body) }
        case .list, .tuple, .set:
            for (i, x) in (v.items ?? []).enumerated() { try walkTensors(x, prefix: join(String(i)), depth: depth + 1, body) }
        default: break
        }
    }

    /// The value at a `/`-separated path of dict keys (string or int) and list indices.
    public func value(at path: String) -> PickleValue? {
        var v: PickleValue? = root
        for part in path.split(separator: "/").map(String.init) {
            guard let cur = v else { return nil }
            if let d = cur.dict {
                v = d[part] ?? Int64(part).flatMap { d[.int($0)] }
            } else if let items = cur.items, let i = Int(part), i >= 0, i < items.count {
                v = items[i]
            } else { return nil }
        }
        return v
    }

    /// Finds the model state dict: `key` if given (a `/` path), else the root if it holds tensors
    /// directly, else the first of `state_dict`, `model`, `module`, `net` that is a dict. Returns
    /// the dict and the path it was found at.
    public func stateDict(key: String? = nil) throws -> (PickleDict, String) {
        if let k = key {
            guard let d = value(at: k)?.dict else {
                throw TorchCheckpointError.noStateDict(path: path, message: "no dict at key '\(k)' (top-level keys: \(root.dict?.stringKeys ?? []))")
            }
            return (d, k)
        }
        guard let top = root.dict else { throw TorchCheckpointError.noStateDict(path: path, message: "the checkpoint is \(root.repr.prefix(60)), not a dict") }
        if top.pairs.contains(where: { if case .tensor = $0.1 { return true }; return false }) { return (top, "") }
        for k in ["state_dict", "model", "module", "net"] {
            if let d = top[k]?.dict { return (d, k) }
        }
        throw TorchCheckpointError.noStateDict(path: path, message: "no state dict found (top-level keys: \(top.stringKeys)). HINT: pass --key <name>")
    }
}
