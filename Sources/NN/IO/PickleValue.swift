import Foundation

/// A value produced by `SafeUnpickler`: plain data only. Python objects that a pickle could
/// construct by calling code are either one of the few allowlisted torch/collections types
/// (tensors, storages, dtypes, `OrderedDict`, sets, `torch.Size`) or refused — the set
/// `torch.load(weights_only=True)` accepts by default.
public indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int64)
    /// An integer wider than 64 bits, little-endian two's complement (`LONG1`/`LONG4`), e.g.
    /// torch's legacy magic number `0x1950a86a20f9469cfc6c`.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    case set([PickleValue])
    /// A reference to an allowlisted global (`torch.FloatStorage`, a rebuild function, ...).
    case global(module: String, name: String)
    /// `torch.float32` etc.
    case dtype(TorchDType)
    /// A storage (a persistent id resolved by the checkpoint reader), possibly a legacy view.
    case storage(TorchStorageRef)
    case tensor(TorchTensor)

    /// `"module.name"` of a global.
    public var globalName: String? {
        if case let .global(m, n) = self { return m + "." + n }
        return nil
    }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var int: Int? {
        switch self {
        case .int(let i): return Int(i)
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case .float(let d): return d
        case .int(let i): return Double(i)
        default: return nil
        }
    }
    public var tensor: TorchTensor? { if case .tensor(let t) = self { return t }; return nil }
    public var dict: PickleDict? {
        if case .dict(let d) = self { return d }
        return nil
    }
    /// Items of a list, tuple or set.
    public var items: [PickleValue]? {
        switch self {
        case .list(let l): return l.items
        case .tuple(let t), .set(let t): return t
        default: return nil
        }
    }

    /// A hashable rendering used for dict keys (Python dict keys here are str, int, tuples of those).
    var keyString: String {
        switch self {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return "i\(i)"
        case .bigInt(let b): return "I" + b.map { String(format: "%02x", $0) }.joined()
        case .float(let d): return "f\(d.bitPattern)"
        case .string(let s): return "s" + s
        case .bytes(let b): return "b" + b.map { String(format: "%02x", $0) }.joined()
        case .tuple(let t): return "(" + t.map(\.keyString).joined(separator: ",") + ")"
        case .global(let m, let n): return "g\(m).\(n)"
        case .dtype(let d): return "d\(d.rawValue)"
        default: return "?\(UUID().uuidString)"
        }
    }

    /// Python's `repr` of the plain-data parts (tensors shown as `tensor(dtype, shape)`), used to
    /// compare with reference dumps and in key reports.
    public var repr: String { repr(depth: 0) }

    func repr(depth: Int) -> String {
        if depth > 50 { return "..." }
        let d1 = depth + 1
        switch self {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .bigInt(let b): return "0x" + b.reversed().map { String(format: "%02x", $0) }.joined()
        case .float(let d): return pythonFloatRepr(d)
        case .string(let s): return pythonStringRepr(s)
        case .bytes(let b): return "b'" + b.map { String(format: "\\x%02x", $0) }.joined() + "'"
        case .tuple(let t): return t.count == 1 ? "(\(t[0].repr(depth: d1)),)" : "(" + t.map { $0.repr(depth: d1) }.joined(separator: ", ") + ")"
        case .list(let l): return "[" + l.items.map { $0.repr(depth: d1) }.joined(separator: ", ") + "]"
        case .set(let s): return s.isEmpty ? "set()" : "{" + s.map { $0.repr(depth: d1) }.joined(separator: ", ") + "}"
        case .dict(let d): return "{" + d.pairs.map { "\($0.0.repr(depth: d1)): \($0.1.repr(depth: d1))" }.joined(separator: ", ") + "}"
        case .global(let m, let n): return "<\(m).\(n)>"
        case .dtype(let d): return "torch.\(d.rawValue)"
        case .storage(let s): return "<storage \(s.storage.key) \(s.storage.dtype.rawValue)[\(s.storage.numel)]>"
        case .tensor(let t): return "tensor(\(t.dtype.rawValue), \(t.shape))"
        }
    }
}

/// A Python list (a class: the pickle memo shares it and `APPENDS` mutates it).
public final class PickleList {
    public var items: [PickleValue]
    init(_ items: [PickleValue] = []) { self.items = items }
}

/// A Python dict or `collections.OrderedDict`, insertion-ordered.
public final class PickleDict {
    public private(set) var pairs: [(PickleValue, PickleValue)] = []
    private var index: [String: Int] = [:]
    /// Attributes set by `BUILD` on an `OrderedDict` (a state_dict's `_metadata`); kept, unused.
    public var attributes: PickleDict?
    init() {}

    public subscript(key: String) -> PickleValue? { index["s" + key].map { pairs[$0].1 } }
    public subscript(key: PickleValue) -> PickleValue? { index[key.keyString].map { pairs[$0].1 } }
    public var count: Int { pairs.count }
    public var stringKeys: [String] { pairs.compactMap { $0.0.string } }

    func set(_ k: PickleValue, _ v: PickleValue) {
        let ks = k.keyString
        if let i = index[ks] { pairs[i].1 = v } else { index[ks] = pairs.count; pairs.append((k, v)) }
    }
}

/// Python's `repr(float)`: the shortest round-tripping digits, `1e-05` style exponents.
func pythonFloatRepr(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d > 0 ? "inf" : "-inf" }
    if d == d.rounded(), abs(d) < 1e16 { return String(format: "%.1f", d) }
    var s = "\(d)"  // Swift prints the shortest round-trip form too
    if let e = s.firstIndex(of: "e") {
        var mant = String(s[..<e]), exp = String(s[s.index(after: e)...])
        if mant.hasSuffix(".0") { mant.removeLast(2) }
        let neg = exp.hasPrefix("-")
        exp = exp.trimmingCharacters(in: CharacterSet(charactersIn: "+-"))
        if exp.count < 2 { exp = "0" + exp }
        s = mant + "e" + (neg ? "-" : "+") + exp
    }
    return s
}

/// Python's `repr(str)` for the common cases (single quotes unless the text holds one).
func pythonStringRepr(_ s: String) -> String {
    let q: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
    var out = String(q)
    for c in s.unicodeScalars {
        switch c {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if Character(c) == q { out += "\\" + String(q) }
            else if c.value < 0x20 || c.value == 0x7F { out += String(format: "\\x%02x", c.value) }
            else { out.unicodeScalars.append(c) }
        }
    }
    return out + String(q)
}
