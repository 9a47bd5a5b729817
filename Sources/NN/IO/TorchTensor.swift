import Foundation
import Tensor

/// Element types of PyTorch storages, named as `torch.<name>` (the raw value) with their
/// storage classes (`torch.FloatStorage` …) and safetensors names.
public enum TorchDType: String, Sendable, CaseIterable {
    case float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool

    public var elementSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }
    /// The safetensors dtype string.
    public var safetensorsName: String {
        switch self {
        case .float32: return "F32"
        case .float64: return "F64"
        case .float16: return "F16"
        case .bfloat16: return "BF16"
        case .int64: return "I64"
        case .int32: return "I32"
        case .int16: return "I16"
        case .int8: return "I8"
        case .uint8: return "U8"
        case .bool: return "BOOL"
        }
    }
    public var isFloatingPoint: Bool { [.float32, .float64, .float16, .bfloat16].contains(self) }

    /// `torch.FloatStorage` → float32, …; nil for anything else.
    public init?(storageClass name: String) {
        switch name {
        case "FloatStorage": self = .float32
        case "DoubleStorage": self = .float64
        case "HalfStorage": self = .float16
        case "BFloat16Storage": self = .bfloat16
        case "LongStorage": self = .int64
        case "IntStorage": self = .int32
        case "ShortStorage": self = .int16
        case "CharStorage": self = .int8
        case "ByteStorage", "UntypedStorage": self = .uint8
        case "BoolStorage": self = .bool
        default: return nil
        }
    }

    /// `torch.float32` / `torch.float` / `torch.half` … (the dtype objects a pickle may name).
    public init?(torchName name: String) {
        switch name {
        case "float32", "float": self = .float32
        case "float64", "double": self = .float64
        case "float16", "half": self = .float16
        case "bfloat16": self = .bfloat16
        case "int64", "long": self = .int64
        case "int32", "int": self = .int32
        case "int16", "short": self = .int16
        case "int8": self = .int8
        case "uint8": self = .uint8
        case "bool": self = .bool
        default: return nil
        }
    }
}

/// One PyTorch storage: `numel` elements of `dtype`, little-endian, at `byteOffset` in the
/// checkpoint's bytes (a zip entry `data/<key>`, or a legacy record). Several tensors may refer to
/// one storage (tied weights): the reader creates one object per key.
public final class TorchStorage {
    public let key: String
    public let dtype: TorchDType
    public let numel: Int
    /// Where the raw bytes start in `source`; set when the storage's record is located (legacy
    /// files locate storages only after the object pickle).
    public internal(set) var byteOffset: Int?
    let source: Data

    init(key: String, dtype: TorchDType, numel: Int, source: Data, byteOffset: Int?) {
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.source = source
        self.byteOffset = byteOffset
    }
}

/// A storage as a pickle refers to it: the whole storage, or (legacy format) a view of
/// `numel` elements starting at element `offset`.
public struct TorchStorageRef {
    public let storage: TorchStorage
    public let offset: Int
    public let numel: Int
}

/// A tensor as `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, …)`
/// describes it: element `(i0, …, ik)` is storage element `offset + Σ i_j·stride_j` (offset and
/// strides in elements).
public final class TorchTensor {
    public let storage: TorchStorage
    /// Element offset into `storage` (a legacy storage view's offset included).
    public let offset: Int
    public let shape: [Int]
    public let stride: [Int]
    public var dtype: TorchDType { storage.dtype }
    public var count: Int { shape.reduce(1, *) }
    /// Where the pickle put this tensor (`model/visual_encoder.cls_token`), for error messages.
    public var origin: String = ""

    init(storage: TorchStorage, offset: Int, shape: [Int], stride: [Int]) {
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride
    }

    public var isContiguous: Bool {
        var expect = 1
        for d in stride.indices.reversed() where shape[d] != 1 {
            if stride[d] != expect { return false }
            expect *= shape[d]
        }
        return true
    }

    /// Checks that every element lies inside the storage and the storage inside the file.
    func validate(path: String) throws {
        func bad(_ m: String) -> TorchCheckpointError { .badFile(path: path, message: "tensor \(origin.isEmpty ? "" : "'\(origin)' ")\(m)") }
        guard shape.count == stride.count else { throw bad("has \(shape.count) sizes but \(stride.count) strides") }
        guard shape.allSatisfy({ $0 >= 0 }), offset >= 0 else { throw bad("has a negative size or offset (\(shape), offset \(offset))") }
        guard storage.byteOffset != nil else { throw bad("refers to storage '\(storage.key)', which the file does not contain") }
        var n = 1
        for s in shape {
            let (m, o) = n.multipliedReportingOverflow(by: s)
            guard !o, m <= (1 << 40) / dtype.elementSize else { throw bad("has an impossible shape \(shape)") }
            n = m
        }
        if n == 0 { return }
        var last = offset
        for d in shape.indices {
            guard stride[d] >= 0 else { throw bad("has a negative stride \(stride)") }
            let (step, o1) = (shape[d] - 1).multipliedReportingOverflow(by: stride[d])
            let (sum, o2) = last.addingReportingOverflow(step)
            guard !o1, !o2 else { throw bad("has sizes \(shape) and strides \(stride) that overflow") }
            last = sum
        }
        guard last < storage.numel else {
            throw bad("(shape \(shape), stride \(stride), offset \(offset)) reaches element \(last) of storage '\(storage.key)', which has \(storage.numel)")
        }
    }

    /// The elements in row-major order as raw little-endian bytes of `dtype` (views resolved).
    public func contiguousBytes() -> [UInt8] {
        let es = dtype.elementSize, n = count
        var out = [UInt8](repeating: 0, count: n * es)
        guard n > 0, let base = storage.byteOffset else { return out }
        storage.source.withUnsafeBytes { raw in
            let src = raw.baseAddress! + base
            out.withUnsafeMutableBytes { dst in
                if isContiguous {
                    dst.baseAddress!.copyMemory(from: src + offset * es, byteCount: n * es)
                    return
                }
                var idx = [Int](repeating: 0, count: shape.count)
                for i in 0..<n {
                    var e = offset
                    for d in idx.indices { e += idx[d] * stride[d] }
                    (dst.baseAddress! + i * es).copyMemory(from: src + e * es, byteCount: es)
                    var d = shape.count - 1
                    while d >= 0 { idx[d] += 1; if idx[d] < shape[d] { break }; idx[d] = 0; d -= 1 }
                }
            }
        }
        return out
    }

    /// The elements converted to Float32 (exact for float16/bfloat16; float64 and int64 rounded
    /// to nearest, as `tensor.float()` does).
    public func floats() -> [Float] {
        let b = contiguousBytes(), n = count
        var out = [Float](repeating: 0, count: n)
        b.withUnsafeBytes { raw in
            switch dtype {
            case .float32: out.withUnsafeMutableBytes { $0.copyMemory(from: raw) }
            case .float64: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
            case .float16: for i in 0..<n { out[i] = Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
            case .bfloat16: for i in 0..<n { out[i] = Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16) }
            case .int64: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)) }
            case .int32: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)) }
            case .int16: for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: i * 2, as: Int16.self)) }
            case .int8: for i in 0..<n { out[i] = Float(raw.load(fromByteOffset: i, as: Int8.self)) }
            case .uint8, .bool: for i in 0..<n { out[i] = Float(raw.load(fromByteOffset: i, as: UInt8.self)) }
            }
        }
        return out
    }

    /// The elements as Int64 (integer dtypes exactly; floats truncated toward zero).
    public func int64s() -> [Int64] {
        if dtype.isFloatingPoint { return floats().map { Int64($0) } }
        let b = contiguousBytes(), n = count
        return b.withUnsafeBytes { raw in
            (0..<n).map { i -> Int64 in
                switch dtype {
                case .int64: return raw.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)
                case .int32: return Int64(raw.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))
                case .int16: return Int64(raw.loadUnaligned(fromByteOffset: i * 2, as: Int16.self))
                case .int8: return Int64(raw.load(fromByteOffset: i, as: Int8.self))
                default: return Int64(raw.load(fromByteOffset: i, as: UInt8.self))
                }
            }
        }
    }
}
