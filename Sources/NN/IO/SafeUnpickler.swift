import Foundation

/// A pickle interpreter that only builds data (Python's `pickle.Unpickler` with a
/// `find_class` that refuses everything but an allowlist, like `torch.load(weights_only=True)`).
///
/// Supports protocols 0–5 as far as torch checkpoints use them: the stack/mark/memo opcodes,
/// ints (text, `BININT*`, `LONG*`), floats, strings and bytes, tuples, lists, dicts, sets,
/// `GLOBAL`/`STACK_GLOBAL` (checked against `allowedGlobals` *when read*, so a forbidden name
/// fails before anything could be called), `REDUCE`/`NEWOBJ`/`BUILD` (interpreted for the allowed
/// globals only; `BUILD` only on an `OrderedDict` or a tensor, as torch's `weights_only` loader), `PERSID`/`BINPERSID` (handed to `persistentLoad`: torch's storages). `INST`,
/// `OBJ`, `EXT*` and out-of-band buffers are refused. Nothing is ever executed.
public struct SafeUnpickler {
    /// Globals a torch checkpoint may name, `module.name`.
    public static let allowedGlobals: Set<String> = {
        var s: Set<String> = [
            "collections.OrderedDict", "collections.Counter",
            "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
            "torch._tensor._rebuild_from_type_v2", "torch.Tensor", "torch.nn.parameter.Parameter",
            "torch.Size", "torch.device", "torch.storage.UntypedStorage", "torch.UntypedStorage",
            "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset",
            "_codecs.encode",
        ]
        for st in ["Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"] { s.insert("torch.\(st)Storage") }
        for d in ["float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long", "int32", "int",
                  "int16", "short", "int8", "uint8", "bool"] { s.insert("torch.\(d)") }
        return s
    }()

    let path: String
    let persistentLoad: (PickleValue) throws -> PickleValue

    public init(path: String, persistentLoad: @escaping (PickleValue) throws -> PickleValue) {
        self.path = path
        self.persistentLoad = persistentLoad
    }

    /// Unpickles one pickle starting at byte `start` of `bytes`; returns the value and the byte
    /// after its `STOP`.
    public func load(_ bytes: UnsafeRawBufferPointer, start: Int) throws -> (PickleValue, end: Int) {
        var m = Machine(b: bytes, pos: start, path: path, persistentLoad: persistentLoad)
        let v = try m.run()
        return (v, m.pos)
    }

    public func load(_ data: Data, start: Int = 0) throws -> (PickleValue, end: Int) {
        try data.withUnsafeBytes { try load($0, start: start) }
    }
}

private struct Machine {
    let b: UnsafeRawBufferPointer
    var pos: Int
    let path: String
    let persistentLoad: (PickleValue) throws -> PickleValue
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]
    var opStart = 0

    init(b: UnsafeRawBufferPointer, pos: Int, path: String, persistentLoad: @escaping (PickleValue) throws -> PickleValue) {
        self.b = b; self.pos = pos; self.path = path; self.persistentLoad = persistentLoad
    }

    func bad(_ m: String) -> TorchCheckpointError { .badFile(path: path, message: "pickle at byte \(opStart): \(m)") }

    mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, pos <= b.count, n <= b.count - pos else { throw bad("needs \(n) more bytes but the file ends at byte \(b.count) (truncated)") }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: b[pos..<(pos + n)])
    }
    mutating func u8() throws -> Int { Int(try take(1)[0]) }
    mutating func uLE(_ n: Int) throws -> Int {
        let r = try take(n)
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(r[i]) << (8 * UInt64(i)) }
        guard v < UInt64(Int.max) else { throw bad("length \(v) out of range") }
        return Int(v)
    }
    mutating func line() throws -> String {
        guard let nl = b[pos...].firstIndex(of: 0x0A) else { throw bad("unterminated text argument (truncated)") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: b[pos..<nl]), as: UTF8.self)
        pos = nl + 1
        return s
    }
    mutating func utf8(_ n: Int) throws -> String {
        let r = try take(n)
        guard let s = String(bytes: r, encoding: .utf8) else { throw bad("string is not valid UTF-8") }
        return s
    }
    mutating func pop() throws -> PickleValue {
        guard let v = stack.popLast() else { throw bad("stack underflow (damaged pickle)") }
        if let m = marks.last, stack.count < m { throw bad("pop across a MARK (damaged pickle)") }
        return v
    }
    mutating func popMark() throws -> [PickleValue] {
        guard let m = marks.popLast(), m <= stack.count else { throw bad("no MARK on the stack (damaged pickle)") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }
    mutating func top() throws -> PickleValue {
        guard let v = stack.last else { throw bad("stack underflow (damaged pickle)") }
        return v
    }
    mutating func global(_ module: String, _ name: String) throws -> PickleValue {
        let full = module + "." + name
        guard SafeUnpickler.allowedGlobals.contains(full) else {
            throw TorchCheckpointError.forbiddenGlobal(path: path, name: full, offset: opStart)
        }
        if module == "torch", let d = TorchDType(torchName: name) { return .dtype(d) }
        return .global(module: module, name: name)
    }
    func bigInt(_ r: UnsafeRawBufferPointer) -> PickleValue {
        let n = r.count
        if n == 0 { return .int(0) }
        if n <= 8 {
            var v: UInt64 = 0
            for i in 0..<n { v |= UInt64(r[i]) << (8 * UInt64(i)) }
            if n < 8, r[n - 1] & 0x80 != 0 { v |= ~UInt64(0) << (8 * UInt64(n)) }
            return .int(Int64(bitPattern: v))
        }
        return .bigInt(Array(r))
    }
    func textInt(_ s: String) throws -> PickleValue {
        var t = s.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("L") { t.removeLast() }
        if t == "00" { return .bool(false) }
        if t == "01" { return .bool(true) }
        guard let i = Int64(t) else { throw bad("integer '\(s)' does not fit 64 bits or is not a number") }
        return .int(i)
    }

    mutating func setItems(_ target: PickleValue, _ kv: [PickleValue]) throws {
        guard case .dict(let d) = target else { throw bad("SETITEM(S) on \(target.repr.prefix(60)), not a dict") }
        guard kv.count % 2 == 0 else { throw bad("SETITEMS with an odd number of items") }
        for i in stride(from: 0, to: kv.count, by: 2) { d.set(kv[i], kv[i + 1]) }
    }
    mutating func append(_ target: PickleValue, _ items: [PickleValue]) throws {
        guard case .list(let l) = target else { throw bad("APPEND(S) on \(target.repr.prefix(60)), not a list") }
        l.items += items
    }

    /// `callable(*args)` for the allowlisted callables.
    func call(_ f: PickleValue, _ args: [PickleValue]) throws -> PickleValue {
        guard let name = f.globalName else { throw bad("REDUCE on \(f.repr.prefix(60)), which is not a global") }
        func arg(_ i: Int) throws -> PickleValue {
            guard i < args.count else { throw bad("\(name) called with \(args.count) arguments") }
            return args[i]
        }
        func ints(_ v: PickleValue, _ what: String) throws -> [Int] {
            guard let items = v.items else { throw bad("\(name): \(what) is \(v.repr.prefix(40)), not a tuple of ints") }
            return try items.map { guard let i = $0.int else { throw bad("\(name): \(what) holds \($0.repr)") }; return i }
        }
        switch name {
        case "collections.OrderedDict":
            let d = PickleDict()
            if let pairs = args.first?.items {
                for p in pairs {
                    guard let kv = p.items, kv.count == 2 else { throw bad("OrderedDict item \(p.repr.prefix(40)) is not a pair") }
                    d.set(kv[0], kv[1])
                }
            }
            return .dict(d)
        case "collections.Counter":
            let d = PickleDict()
            if let src = args.first?.dict { for (k, v) in src.pairs { d.set(k, v) } }
            return .dict(d)
        case "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2":
            guard case .storage(let s) = try arg(0) else { throw bad("\(name): first argument is not a storage") }
            guard let off = try arg(1).int else { throw bad("\(name): storage offset is not an int") }
            let t = TorchTensor(storage: s.storage, offset: s.offset + off, shape: try ints(try arg(2), "size"), stride: try ints(try arg(3), "stride"))
            return .tensor(t)
        case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
            guard case .tensor = try arg(0) else { throw bad("\(name): data is not a tensor") }
            return args[0]
        case "torch._tensor._rebuild_from_type_v2":
            guard let inner = try arg(2).items else { throw bad("\(name): arguments are not a tuple") }
            return try call(try arg(0), inner)
        case "torch.Size":
            return .tuple(try arg(0).items ?? [])
        case "torch.device":
            return try arg(0)
        case "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset":
            return .set(args.first?.items ?? [])
        case "_codecs.encode":
            guard let s = try arg(0).string else { throw bad("_codecs.encode of a non-string") }
            let enc = args.count > 1 ? args[1].string ?? "" : "utf-8"
            if enc == "latin1" || enc == "latin-1" {
                return .bytes(try s.unicodeScalars.map { guard $0.value < 256 else { throw bad("_codecs.encode: not latin-1") }; return UInt8($0.value) })
            }
            return .bytes(Array(s.utf8))
        default:
            throw bad("\(name) cannot be called (it is a type marker, allowed only as an argument)")
        }
    }

    mutating func run() throws -> PickleValue {
        while true {
            opStart = pos
            let op = try u8()
            switch op {
            case 0x80: _ = try u8()                                                   // PROTO
            case 0x95: _ = try take(8)                                                // FRAME
            case 0x2E:                                                                // STOP
                guard let v = stack.last, stack.count == 1 else { throw bad("STOP with \(stack.count) items on the stack") }
                return v
            case 0x28: marks.append(stack.count)                                      // MARK
            case 0x30: _ = try pop()                                                  // POP
            case 0x31: _ = try popMark()                                              // POP_MARK
            case 0x32: stack.append(try top())                                        // DUP
            case 0x4E: stack.append(.none)                                            // NONE
            case 0x88: stack.append(.bool(true))                                      // NEWTRUE
            case 0x89: stack.append(.bool(false))                                     // NEWFALSE
            case 0x49: stack.append(try textInt(try line()))                          // INT
            case 0x4C: stack.append(try textInt(try line()))                          // LONG
            case 0x4A: stack.append(.int(Int64(Int32(bitPattern: UInt32(try uLE(4))))))  // BININT
            case 0x4B: stack.append(.int(Int64(try u8())))                            // BININT1
            case 0x4D: stack.append(.int(Int64(try uLE(2))))                          // BININT2
            case 0x8A: let n = try u8(); stack.append(bigInt(try take(n)))            // LONG1
            case 0x8B: let n = try uLE(4); stack.append(bigInt(try take(n)))         // LONG4
            case 0x46:                                                                // FLOAT
                let s = try line()
                guard let d = Double(s.trimmingCharacters(in: .whitespaces)) else { throw bad("float '\(s)'") }
                stack.append(.float(d))
            case 0x47:                                                                // BINFLOAT (big-endian)
                let r = try take(8)
                var v: UInt64 = 0
                for i in 0..<8 { v = v << 8 | UInt64(r[i]) }
                stack.append(.float(Double(bitPattern: v)))
            case 0x58: let n = try uLE(4); stack.append(.string(try utf8(n)))        // BINUNICODE
            case 0x8C: let n = try u8(); stack.append(.string(try utf8(n)))          // SHORT_BINUNICODE
            case 0x8D: let n = try uLE(8); stack.append(.string(try utf8(n)))        // BINUNICODE8
            case 0x56: stack.append(.string(try line()))                              // UNICODE (raw)
            case 0x54: let n = try uLE(4); stack.append(.bytes(Array(try take(n))))  // BINSTRING
            case 0x55: let n = try u8(); stack.append(.bytes(Array(try take(n))))    // SHORT_BINSTRING
            case 0x42: let n = try uLE(4); stack.append(.bytes(Array(try take(n))))  // BINBYTES
            case 0x43: let n = try u8(); stack.append(.bytes(Array(try take(n))))    // SHORT_BINBYTES
            case 0x8E, 0x96: let n = try uLE(8); stack.append(.bytes(Array(try take(n))))  // BINBYTES8, BYTEARRAY8
            case 0x5D: stack.append(.list(PickleList()))                              // EMPTY_LIST
            case 0x6C: stack.append(.list(PickleList(try popMark())))                 // LIST
            case 0x61: let v = try pop(); try append(try top(), [v])                  // APPEND
            case 0x65: let items = try popMark(); try append(try top(), items)        // APPENDS
            case 0x29: stack.append(.tuple([]))                                       // EMPTY_TUPLE
            case 0x74: stack.append(.tuple(try popMark()))                            // TUPLE
            case 0x85: let a = try pop(); stack.append(.tuple([a]))                   // TUPLE1
            case 0x86: let b2 = try pop(), a = try pop(); stack.append(.tuple([a, b2]))  // TUPLE2
            case 0x87: let c = try pop(), b2 = try pop(), a = try pop(); stack.append(.tuple([a, b2, c]))  // TUPLE3
            case 0x7D: stack.append(.dict(PickleDict()))                              // EMPTY_DICT
            case 0x64: let d = PickleValue.dict(PickleDict()); try setItems(d, try popMark()); stack.append(d)  // DICT
            case 0x73: let v = try pop(), k = try pop(); try setItems(try top(), [k, v])  // SETITEM
            case 0x75: let kv = try popMark(); try setItems(try top(), kv)            // SETITEMS
            case 0x8F: stack.append(.set([]))                                         // EMPTY_SET
            case 0x90:                                                                // ADDITEMS
                let items = try popMark()
                guard case .set(let s) = try pop() else { throw bad("ADDITEMS on a non-set") }
                stack.append(.set(s + items))
            case 0x91: stack.append(.set(try popMark()))                              // FROZENSET
            case 0x67: guard let i = Int(try line()), let v = memo[i] else { throw bad("GET of an unset memo slot") }; stack.append(v)
            case 0x68: let i = try u8(); guard let v = memo[i] else { throw bad("BINGET \(i) of an unset memo slot") }; stack.append(v)
            case 0x6A: let i = try uLE(4); guard let v = memo[i] else { throw bad("LONG_BINGET \(i) of an unset memo slot") }; stack.append(v)
            case 0x70: guard let i = Int(try line()) else { throw bad("PUT index") }; memo[i] = try top()
            case 0x71: memo[try u8()] = try top()                                     // BINPUT
            case 0x72: memo[try uLE(4)] = try top()                                   // LONG_BINPUT
            case 0x94: memo[memo.count] = try top()                                   // MEMOIZE
            case 0x63:                                                                // GLOBAL
                let module = try line(), name = try line()
                stack.append(try global(module, name))
            case 0x93:                                                                // STACK_GLOBAL
                let n = try pop(), m = try pop()
                guard let ms = m.string, let ns = n.string else { throw bad("STACK_GLOBAL with non-string names") }
                stack.append(try global(ms, ns))
            case 0x52:                                                                // REDUCE
                let args = try pop(), f = try pop()
                guard let a = args.items else { throw bad("REDUCE arguments are not a tuple") }
                stack.append(try call(f, a))
            case 0x81:                                                                // NEWOBJ
                let args = try pop(), cls = try pop()
                stack.append(try call(cls, args.items ?? []))
            case 0x92:                                                                // NEWOBJ_EX
                _ = try pop(); let args = try pop(), cls = try pop()
                stack.append(try call(cls, args.items ?? []))
            case 0x62:                                                                // BUILD
                let state = try pop()
                switch try top() {
                case .dict(let d): d.attributes = state.dict                          // OrderedDict._metadata
                case .tensor: break                                                   // a tensor's __dict__ (hooks etc.)
                default: throw bad("BUILD on \(try top().repr.prefix(60))")
                }
            case 0x50: stack.append(try persistentLoad(.string(try line())))          // PERSID
            case 0x51: stack.append(try persistentLoad(try pop()))                    // BINPERSID
            case 0x69, 0x6F, 0x82, 0x83, 0x84, 0x97, 0x98:
                let names: [Int: String] = [0x69: "INST", 0x6F: "OBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER"]
                throw TorchCheckpointError.forbiddenOpcode(path: path, opcode: names[Int(op)]!, offset: opStart)
            default:
                throw bad(String(format: "unknown opcode 0x%02x (damaged file, or not a pickle)", op))
            }
        }
    }
}
