import Tensor

/// An integer buffer of a module (`queue_ptr`, `position_ids`): saved and loaded, never trained.
public final class IntBuffer {
    public var value: IntTensor
    public init(_ value: IntTensor) { self.value = value }
}

/// One `state_dict` entry: a float tensor (parameter or float buffer) or an integer buffer.
public enum StateEntry {
    case float(Tensor)
    case int(IntBuffer)

    public var shape: [Int] {
        switch self {
        case .float(let t): return t.shape
        case .int(let b): return b.value.shape
        }
    }
}

/// A node of the module tree whose keys are exactly PyTorch's `state_dict` keys.
///
/// Subclasses list their direct children and entries in PyTorch registration order, keyed by
/// their torch names (`"self"`, `"LayerNorm"`, `"0"`, ...). Keys of the whole tree are the dotted
/// paths (`text_encoder.bert.encoder.layer.7.crossattention.self.key.weight`).
/// PyTorch counterpart: `torch.nn.Module` (`named_parameters`, `state_dict`, `train`/`eval`).
open class Module {
    /// Training mode (dropout active). Set recursively with `train(_:)`.
    public private(set) var isTraining = true

    public init() {}

    /// Direct sub-modules in registration order, with their state_dict names.
    open var children: [(String, Module)] { [] }
    /// Direct trainable parameters with their names.
    open var localParameters: [(String, Tensor)] { [] }
    /// Direct buffers (float or int) with their names; saved, loaded, never trained.
    open var localBuffers: [(String, StateEntry)] { [] }

    /// Sets training mode on this module and every descendant.
    public func train(_ on: Bool = true) {
        isTraining = on
        for (_, c) in children { c.train(on) }
    }

    /// Every parameter with its dotted key, depth-first in registration order. A tensor reachable
    /// under two keys (tied weights) is listed under each key.
    public func namedParameters(prefix: String = "") -> [(String, Tensor)] {
        var out: [(String, Tensor)] = localParameters.map { (prefix + $0.0, $0.1) }
        for (n, c) in children { out += c.namedParameters(prefix: prefix + n + ".") }
        return out
    }

    /// Parameters without duplicates (first key wins), as `nn.Module.parameters()` yields them.
    public func uniqueParameters() -> [(String, Tensor)] {
        var seen = Set<ObjectIdentifier>()
        return namedParameters().filter { seen.insert(ObjectIdentifier($0.1)).inserted }
    }

    /// Every buffer with its dotted key.
    public func namedBuffers(prefix: String = "") -> [(String, StateEntry)] {
        var out = localBuffers.map { (prefix + $0.0, $0.1) }
        for (n, c) in children { out += c.namedBuffers(prefix: prefix + n + ".") }
        return out
    }

    /// The whole state: parameters and buffers under their keys, in a PyTorch-like order
    /// (this module's own entries, then each child's).
    public func stateEntries(prefix: String = "") -> [(String, StateEntry)] {
        var out: [(String, StateEntry)] = localParameters.map { (prefix + $0.0, .float($0.1)) }
        out += localBuffers.map { (prefix + $0.0, $0.1) }
        for (n, c) in children { out += c.stateEntries(prefix: prefix + n + ".") }
        return out
    }

    /// Number of trainable scalars (tied tensors counted once).
    public var parameterCount: Int { uniqueParameters().reduce(0) { $0 + $1.1.count } }
}

/// `nn.ModuleList`: children named "0", "1", ...
public final class ModuleList<M: Module>: Module {
    public let items: [M]
    public init(_ items: [M]) { self.items = items }
    public override var children: [(String, Module)] { items.enumerated().map { (String($0.offset), $0.element) } }
    public subscript(i: Int) -> M { items[i] }
    public var count: Int { items.count }
}

/// A reference-typed random generator shared by the dropout layers of one model.
public final class SharedRandom {
    public var generator: RandomGenerator
    public init(_ g: RandomGenerator) { generator = g }
}
