#if canImport(Glibc)
import Glibc
#endif
import CKernels

/// A dense, row-major Float32 tensor that records its own gradient function (a runtime tape).
///
/// Every tensor is contiguous. `reshaped` shares storage; `permuted`, slicing and concatenation
/// copy (and are differentiable). A tensor produced by an op while `GradMode.isEnabled` and with
/// at least one input that requires grad keeps its `parents` and a `backwardFn`; `backward()` on a
/// scalar runs those closures in reverse topological order, accumulating (`+=`) into `grad`.
///
/// PyTorch counterpart: `torch.Tensor` (float32, CPU, always contiguous).
public final class Tensor {
    /// Dimensions, outermost first.
    public let shape: [Int]
    /// Number of elements (product of `shape`; 1 for a 0-dim tensor).
    public let count: Int
    /// Backing memory.
    public internal(set) var storage: Storage
    /// Whether gradients flow into this tensor.
    public var requiresGrad: Bool
    /// The gradient buffer (same shape), allocated on first accumulation or preset for parameters.
    public var gradStorage: Storage?
    /// For parameters whose gradient lives in a buffer bound on demand (optimizer-in-backward):
    /// called by `gradPointer` when `gradStorage` is nil; it must set `gradStorage`.
    public var gradientBinder: ((Tensor) -> Void)?
    var parents: [Tensor] = []
    var backwardFn: ((Tensor) -> Void)?
    /// Whether `backwardFn` reads this tensor's values (softmax, layer norm, activations do; the
    /// linear ops and attention read only its gradient). Such a tensor's storage is never
    /// converted away (`canReleaseStorage`).
    var backwardReadsOutput = true
    /// In bf16 mode, linear layers with this tensor as their weight compute its gradient
    /// (`dW += doutᵀ·inp`) in fp32 instead of on bf16 operands (config `bf16_fp32_weight_grads`).
    public var weightGradFP32 = false
    /// In bf16 mode this weight may be split in place into bf16 high and int16 low halves during
    /// a step (`BF16Weights`): set for the weights whose every reader joins it first (linear
    /// layers, embedding tables); a weight read by anything else must leave it false.
    public var bf16Splittable = false
    /// Debug name (parameters carry their state_dict key).
    public var name: String?

    /// Element pointer.
    @inline(__always) public var data: UnsafeMutablePointer<Float> { storage.pointer }

    /// Whether `convertingStorageToBF16` took this tensor's memory back (its `data` is then unreadable).
    public var isStorageReleased: Bool { storage === Storage.released }

    /// Rounds this tensor's values to bf16 into the first half of its own memory and hands that
    /// memory over as the returned buffer (same element indices, e.g. a packed `[N, 3C]` qkv
    /// stays `[N, 3C]` with rows 3C apart); the pages of the second half go back to the system
    /// (`madvise(MADV_DONTNEED)`; the pool's next user of the buffer gets them zeroed). For an op
    /// that keeps only bf16 copies of its inputs for the backward (bf16 attention, `addingLinear`): the bf16
    /// values are the bits `convertToBF16` gives, and the fp32 values are gone. Only when nothing
    /// else can read them — the caller holds the only reference to the tensor (checked by the
    /// caller, e.g. with a `consuming` parameter) and `canReleaseStorage`. The tensor keeps its
    /// shape and gradient; its `data` then points at address space that faults on access.
    func convertingStorageToBF16() -> BF16Buffer {
        precondition(canReleaseStorage, "convertingStorageToBF16: storage shared or not from the pool")
        let s = storage
        storage = Storage.released
        // In place, front to back, on one thread: element i's two bytes land on bytes that
        // elements < i already vacated (the conversion reads each 16-lane block before writing it).
        ck_f32_to_bf16(UnsafeMutableRawPointer(s.pointer).assumingMemoryBound(to: UInt16.self), s.pointer, 0, count)
        let page = Tensor.pageBytes
        let bytes = s.capacity * MemoryLayout<Float>.stride
        let keep = (count * 2 + page - 1) / page * page
        var returned = 0
        if bytes >= BufferPool.mmapBytes, keep < bytes,  // pages of its own (below: malloc's, left alone)
           madvise(UnsafeMutableRawPointer(s.pointer) + keep, bytes - keep, Int32(MADV_DONTNEED)) == 0 {
            returned = bytes - keep
        }
        ReleasedActivations.note(returned: returned, keptBF16: count * 2)
        return BF16Buffer(reusing: s, count: count)
    }

    static let pageBytes = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Whether `convertingStorageToBF16` may take this tensor's memory: pool memory that only this
    /// tensor references, and no recorded backward of the op that produced it reads its values
    /// (the caller's side, the tensor's own references, is the caller's to check).
    var canReleaseStorage: Bool {
        !isStorageReleased && storage.pooled && (backwardFn == nil || !backwardReadsOutput) && isKnownUniquelyReferenced(&storage)
    }

    /// A new tensor over `storage` (which must hold `shape`'s element count).
    public init(shape: [Int], storage: Storage, requiresGrad: Bool = false) {
        let n = shape.reduce(1, *)
        precondition(storage.count >= n, "Tensor: storage of \(storage.count) < \(n) for shape \(shape)")
        self.shape = shape
        self.count = n
        self.storage = storage
        self.requiresGrad = requiresGrad
    }

    /// Zeros of `shape`.
    public convenience init(zeros shape: [Int], requiresGrad: Bool = false) {
        self.init(shape: shape, storage: Storage(count: shape.reduce(1, *)), requiresGrad: requiresGrad)
    }

    /// Uninitialised memory of `shape` (for kernels that write every element).
    public convenience init(uninitialized shape: [Int]) {
        self.init(shape: shape, storage: Storage(count: shape.reduce(1, *), zeroed: false))
    }

    /// A tensor holding `values` (row-major) with `shape`.
    public convenience init(_ values: [Float], shape: [Int], requiresGrad: Bool = false) {
        precondition(values.count == shape.reduce(1, *), "Tensor: \(values.count) values for shape \(shape)")
        self.init(uninitialized: shape)
        values.withUnsafeBufferPointer { src in
            if let b = src.baseAddress { data.update(from: b, count: values.count) }
        }
        self.requiresGrad = requiresGrad
    }

    /// A 0-dim tensor.
    public convenience init(scalar: Float, requiresGrad: Bool = false) {
        self.init([scalar], shape: [], requiresGrad: requiresGrad)
    }

    /// Filled with `value`.
    public convenience init(repeating value: Float, shape: [Int]) {
        self.init(uninitialized: shape)
        data.update(repeating: value, count: count)
    }

    /// Number of dimensions.
    public var rank: Int { shape.count }

    /// Contents as an array.
    public var scalars: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    /// The single value of a one-element tensor.
    public var item: Float {
        precondition(count == 1, "item: tensor of shape \(shape) has \(count) elements")
        return data[0]
    }

    /// The gradient as a tensor (nil until something was accumulated).
    public var grad: Tensor? {
        gradStorage.map { Tensor(shape: shape, storage: $0) }
    }

    /// Pointer to the gradient, allocating zeros on first use.
    @inline(__always)
    public var gradPointer: UnsafeMutablePointer<Float> {
        if let g = gradStorage { return g.pointer }
        if let bind = gradientBinder {
            bind(self)
            if let g = gradStorage { return g.pointer }
        }
        let g = Storage(count: count)
        gradStorage = g
        return g.pointer
    }

    /// Drops the gradient (parameters with a preset flat-buffer gradient are zeroed instead).
    public func zeroGrad() {
        gradStorage?.pointer.update(repeating: 0, count: count)
    }

    /// A copy that shares nothing and records nothing.
    public func detachedCopy() -> Tensor {
        let t = Tensor(uninitialized: shape)
        t.data.update(from: data, count: count)
        return t
    }

    /// The same storage without autograd history.
    public func detached() -> Tensor { Tensor(shape: shape, storage: storage) }

    /// Whether an op on these inputs should record a backward closure.
    @inline(__always)
    static func needsGrad(_ inputs: Tensor?...) -> Bool {
        guard GradMode.isEnabled else { return false }
        for t in inputs where t?.requiresGrad == true { return true }
        return false
    }

    /// Registers `fn` as the backward of `self`, produced from `inputs`. `readsOutput: false`
    /// promises that `fn` reads only `self`'s gradient, not its values.
    @inline(__always)
    func record(_ inputs: [Tensor], readsOutput: Bool = true, _ fn: @escaping (Tensor) -> Void) {
        requiresGrad = true
        parents = inputs
        backwardFn = fn
        backwardReadsOutput = readsOutput
    }

    /// Reverse-mode differentiation from this scalar: seeds d(self)/d(self) = 1 (or `seed`),
    /// runs every recorded backward once in reverse topological order, then frees the tape
    /// (saved activations go back to the pool). Leaf gradients accumulate.
    public func backward(seed: Float = 1) {
        backward(seed: seed, prepare: nil, afterNode: nil)
    }

    /// `backward()` with hooks for gradient bucketing: `prepare` sees the nodes in the order
    /// their backward closures will run; `afterNode` is called after each one has run (its
    /// `parents` are still attached), so a caller can tell when a leaf's gradient is final.
    public func backward(seed: Float = 1, prepare: (([Tensor]) -> Void)?, afterNode: ((Tensor) -> Void)?) {
        precondition(count == 1, "backward: needs a scalar, got shape \(shape)")
        var order: [Tensor] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(Tensor, Bool)] = [(self, false)]
        while let (t, expanded) = stack.popLast() {
            if expanded { order.append(t); continue }
            let id = ObjectIdentifier(t)
            if visited.contains(id) { continue }
            visited.insert(id)
            stack.append((t, true))
            for p in t.parents where p.backwardFn != nil && !visited.contains(ObjectIdentifier(p)) {
                stack.append((p, false))
            }
        }
        gradPointer[0] += seed
        order.reverse()
        prepare?(order)
        // Each node is dropped from the list once processed, so an activation goes back to the
        // pool as soon as the last backward that reads it has run (not at the end of backward).
        var pending = order.map { Optional($0) }
        order = []
        for i in pending.indices {
            guard let t = pending[i] else { continue }
            pending[i] = nil
            if let fn = t.backwardFn { fn(t) }
            afterNode?(t)
            t.backwardFn = nil
            t.parents = []
            if t !== self { t.gradStorage = nil }
        }
    }

    /// The tensors this one was computed from (empty for leaves and after backward).
    public var inputs: [Tensor] { parents }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let head = scalars.prefix(8).map { String($0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(head)\(count > 8 ? ", ..." : "")])"
    }
}

/// A small integer tensor (token ids, labels, buffers such as `queue_ptr`). Not differentiable.
public struct IntTensor: Equatable, Sendable {
    /// Dimensions.
    public var shape: [Int]
    /// Row-major values.
    public var values: [Int64]

    public init(_ values: [Int64], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "IntTensor: \(values.count) values for \(shape)")
        self.values = values
        self.shape = shape
    }

    /// Values as Int32 (token ids).
    public var int32: [Int32] { values.map { Int32(truncatingIfNeeded: $0) } }
}

extension Tensor {
    /// Re-points this tensor at `storage` (same element count), e.g. a slice of a flat parameter
    /// buffer; the old contents are copied over first when `copy` is set.
    public func rebind(to newStorage: Storage, gradient: Storage?, copy: Bool = true) {
        precondition(newStorage.count >= count, "rebind: storage too small for \(shape)")
        if copy { newStorage.pointer.update(from: data, count: count) }
        storage = newStorage
        gradStorage = gradient
    }
}

extension Tensor {
    /// Records a backward closure defined outside this module (for custom differentiable ops).
    public func recordExternal(_ inputs: [Tensor], _ fn: @escaping (Tensor) -> Void) {
        record(inputs, fn)
    }
}
