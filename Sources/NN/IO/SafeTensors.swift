import Foundation
import Tensor

/// Errors reading or writing safetensors files and loading state dicts.
public enum CheckpointError: Error, CustomStringConvertible {
    case io(path: String, message: String)
    case badHeader(path: String, offset: Int, message: String)
    case unsupportedDType(path: String, key: String, dtype: String)
    case missingKey(path: String, key: String)
    case shapeMismatch(key: String, expected: [Int], got: [Int], path: String)
    case keyMismatch(report: LoadReport, path: String)

    public var description: String {
        switch self {
        case let .io(path, m): return "\(path): \(m)"
        case let .badHeader(path, offset, m):
            return "\(path): invalid safetensors header at byte \(offset): \(m). HINT: the file is truncated or not a safetensors file; re-export it with safetensors.torch.save_file."
        case let .unsupportedDType(path, key, d): return "\(path): tensor '\(key)' has dtype \(d); supported: F32, F16, BF16, I64 (I32 read as ints)."
        case let .missingKey(path, key): return "\(path): no tensor named '\(key)'"
        case let .shapeMismatch(key, e, g, path):
            return "\(path): tensor '\(key)' has shape \(g), the model expects \(e). HINT: the checkpoint was made with another config (check image_res / hidden sizes / vocab)."
        case let .keyMismatch(r, path): return "\(path): state dict does not match the model (strict): \(r.summary)"
        }
    }
}

/// One tensor stored in a safetensors file.
public struct SafeTensorInfo: Sendable {
    public var dtype: String
    public var shape: [Int]
    public var begin: Int
    public var end: Int
}

/// A safetensors file opened read-only and memory-mapped.
///
/// Format: 8-byte little-endian header length N, N bytes of JSON
/// `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the
/// raw little-endian data (offsets relative to the end of the header).
public final class SafeTensorsFile {
    public let path: String
    public let entries: [String: SafeTensorInfo]
    public let metadata: [String: String]
    let data: Data
    let dataStart: Int

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw CheckpointError.io(path: path, message: "file not found")
        }
        let d: Data
        do { d = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw CheckpointError.io(path: path, message: "cannot read: \(error.localizedDescription)")
        }
        data = d
        guard d.count >= 8 else { throw CheckpointError.badHeader(path: path, offset: 0, message: "file has \(d.count) bytes, needs at least 8 for the header length") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(d[d.startIndex + i]) << (8 * UInt64(i)) }
        guard n <= UInt64(d.count - 8), n < 100_000_000 else {
            throw CheckpointError.badHeader(path: path, offset: 0, message: "header length \(n) exceeds the file size \(d.count)")
        }
        let hs = Int(n)
        dataStart = 8 + hs
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: d.subdata(in: (d.startIndex + 8)..<(d.startIndex + 8 + hs))) } catch {
            throw CheckpointError.badHeader(path: path, offset: 8, message: "header JSON does not parse (\(error.localizedDescription))")
        }
        guard let dict = json as? [String: Any] else {
            throw CheckpointError.badHeader(path: path, offset: 8, message: "header is not a JSON object")
        }
        var es: [String: SafeTensorInfo] = [:]
        var meta: [String: String] = [:]
        let dataSize = d.count - dataStart
        for (k, v) in dict {
            if k == "__metadata__" {
                if let m = v as? [String: String] { meta = m }
                continue
            }
            guard let o = v as? [String: Any], let dt = o["dtype"] as? String, let sh = o["shape"] as? [Int],
                  let offs = o["data_offsets"] as? [Int], offs.count == 2 else {
                throw CheckpointError.badHeader(path: path, offset: 8, message: "entry '\(k)' lacks dtype/shape/data_offsets")
            }
            let elem: Int
            switch dt {
            case "F32", "I32": elem = 4
            case "F16", "BF16": elem = 2
            case "I64", "F64": elem = 8
            case "U8", "I8", "BOOL": elem = 1
            default: throw CheckpointError.unsupportedDType(path: path, key: k, dtype: dt)
            }
            // Element count with overflow checks (a crafted shape must not trap or wrap).
            var need = elem
            for d in sh {
                let (m, over) = need.multipliedReportingOverflow(by: d)
                guard d >= 0, !over, m <= dataSize else {
                    throw CheckpointError.badHeader(path: path, offset: 8, message: "entry '\(k)': shape \(sh) is negative or larger than the file's \(dataSize) data bytes")
                }
                need = m
            }
            guard offs[0] >= 0, offs[1] >= offs[0], offs[1] - offs[0] == need else {
                throw CheckpointError.badHeader(path: path, offset: 8, message: "entry '\(k)': data_offsets \(offs) do not match \(dt) shape \(sh) (\(need) bytes)")
            }
            guard offs[1] <= dataSize else {
                throw CheckpointError.badHeader(path: path, offset: dataStart + offs[0],
                                                message: "entry '\(k)' ends at data byte \(offs[1]) but the file holds \(dataSize) data bytes (truncated)")
            }
            es[k] = SafeTensorInfo(dtype: dt, shape: sh, begin: offs[0], end: offs[1])
        }
        // No two tensors may share bytes (a writer bug or a crafted file).
        let spans = es.sorted { ($0.value.begin, $0.value.end) < ($1.value.begin, $1.value.end) }
        for (a, b) in zip(spans, spans.dropFirst()) where b.value.begin < a.value.end && b.value.end > b.value.begin {
            throw CheckpointError.badHeader(path: path, offset: dataStart + b.value.begin,
                                            message: "entries '\(a.key)' [\(a.value.begin), \(a.value.end)) and '\(b.key)' [\(b.value.begin), \(b.value.end)) overlap")
        }
        entries = es
        metadata = meta
    }

    /// Tensor names, sorted.
    public var keys: [String] { entries.keys.sorted() }

    /// Float values of `key` (F32, F16, BF16, F64 converted to Float32).
    public func floats(_ key: String) throws -> [Float] {
        guard let e = entries[key] else { throw CheckpointError.missingKey(path: path, key: key) }
        let n = e.shape.reduce(1, *)
        return data.withUnsafeBytes { raw -> [Float] in
            let base = raw.baseAddress! + dataStart + e.begin
            var out = [Float](repeating: 0, count: n)
            switch e.dtype {
            case "F32": out.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: base, count: n * 4)) }
            case "F64": for i in 0..<n { out[i] = Float(base.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
            case "F16":
                for i in 0..<n { out[i] = Float(Float16(bitPattern: base.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
            case "BF16":
                for i in 0..<n { out[i] = Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16) }
            case "I64": for i in 0..<n { out[i] = Float(base.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)) }
            case "I32": for i in 0..<n { out[i] = Float(base.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)) }
            default: break
            }
            return out
        }
    }

    /// Float tensor of `key`.
    public func tensor(_ key: String) throws -> Tensor {
        guard let e = entries[key] else { throw CheckpointError.missingKey(path: path, key: key) }
        return Tensor(try floats(key), shape: e.shape)
    }

    /// Integer values of `key` (I64, I32, U8, BOOL, or integral floats).
    public func ints(_ key: String) throws -> IntTensor {
        guard let e = entries[key] else { throw CheckpointError.missingKey(path: path, key: key) }
        let n = e.shape.reduce(1, *)
        let vals: [Int64] = data.withUnsafeBytes { raw in
            let base = raw.baseAddress! + dataStart + e.begin
            switch e.dtype {
            case "I64": return (0..<n).map { base.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self) }
            case "I32": return (0..<n).map { Int64(base.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
            case "U8", "BOOL", "I8": return (0..<n).map { Int64(base.load(fromByteOffset: $0, as: UInt8.self)) }
            default: return []
            }
        }
        if vals.count == n { return IntTensor(vals, shape: e.shape) }
        return IntTensor(try floats(key).map { Int64($0) }, shape: e.shape)
    }

    /// Writes `entries` (F32 for float tensors, I64 for int buffers) to `path` atomically
    /// (temporary file, fsync, rename). Names are written in the given order.
    public static func write(_ items: [(String, StateEntry)], to path: String, metadata: [String: String] = [:]) throws {
        var header = "{"
        var offset = 0
        var first = true
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        }
        if !metadata.isEmpty {
            header += "\"__metadata__\":{" + metadata.sorted { $0.key < $1.key }
                .map { "\"\(esc($0.key))\":\"\(esc($0.value))\"" }.joined(separator: ",") + "}"
            first = false
        }
        for (k, e) in items {
            let (dt, bytes): (String, Int)
            switch e {
            case .float(let t): (dt, bytes) = ("F32", t.count * 4)
            case .int(let b): (dt, bytes) = ("I64", b.value.values.count * 8)
            }
            if !first { header += "," }
            first = false
            header += "\"\(esc(k))\":{\"dtype\":\"\(dt)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        while (header.utf8.count % 8) != 0 { header += " " }
        var out = Data(capacity: 8 + header.utf8.count + offset)
        var len = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
        out.append(contentsOf: Array(header.utf8))
        for (_, e) in items {
            switch e {
            case .float(let t): out.append(UnsafeBufferPointer(start: t.data, count: t.count))
            case .int(let b): b.value.values.withUnsafeBufferPointer { out.append($0) }
            }
        }
        try atomicWrite(out, to: path)
    }
}

/// Writes `data` to `path` via a temporary sibling, fsync and rename (readers never see a partial file).
public func atomicWrite(_ data: Data, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    guard FileManager.default.createFile(atPath: tmp, contents: nil) else {
        throw CheckpointError.io(path: tmp, message: "cannot create (check the directory exists and is writable)")
    }
    guard let h = FileHandle(forWritingAtPath: tmp) else { throw CheckpointError.io(path: tmp, message: "cannot open for writing") }
    do {
        try h.write(contentsOf: data)
        try h.synchronize()
        try h.close()
    } catch { throw CheckpointError.io(path: tmp, message: "write failed: \(error.localizedDescription)") }
    guard rename(tmp, path) == 0 else { throw CheckpointError.io(path: path, message: "rename failed: errno \(errno)") }
}
