#if canImport(Glibc)
import Glibc
#endif
import CKernels

/// A bf16 GEMM operand: `pointer` with leading dimension `ld` (elements), valid while `owner` lives.
struct BF16Operand {
    let pointer: UnsafePointer<UInt16>
    let ld: Int
    let owner: AnyObject
}

/// bf16 operands of the trainable weights, made once per training step instead of per GEMM.
///
/// Linear and embedding weights (`Tensor.bf16Splittable`, packed, trainable) are **split in
/// place** at their first bf16 GEMM: each row of `I` floats becomes its `I` bf16 high halves
/// followed by `I` int16 low halves (`ck_bf16_split_rows`), so the GEMM reads the high halves
/// with leading dimension `2I` and no copy is kept (2 bytes a parameter less than a cache). The
/// weight stays split through the forward passes and the backward, and is joined back to
/// exactly its fp32 bits before anything reads it: AdamW joins each parameter before updating
/// it (optimizer-in-backward, bucket by bucket), the momentum update and the fp32 GEMM paths
/// join what they read, and `Trainer.step` joins whatever is left when it returns or throws.
/// The high half rounds half up on the bit pattern: nearest, like `convertToBF16`, except at
/// exact ties (1 value in 2¹⁶), which go away from zero instead of to even.
///
/// The momentum encoders' linear weights are split the same way during their forward passes
/// (a bf16 copy per call would cost pool memory at the peak: 47 MiB for the MLM decoder on
/// base) and joined with the rest.
///
/// Every other cacheable weight (the patch embedding's conv weight) gets a bf16 copy:
/// a weight is cached when it is a trainable parameter packed into a flat parameter buffer
/// (`requiresGrad`, storage borrowed from the buffer, not pooled); anything else (the momentum
/// conv weight, which runs forward once per step; activations) is converted at the call.
/// Entries are keyed by the weight's `Storage` object (weakly held: a freed model's entries are
/// never reused, even when a new one lands at the same address) and carry the generation they
/// were converted in. The copies live outside the buffer pool, each in memory
/// of its exact size (`BF16Buffer(unpooledCount:)`).
///
/// Invalidation: weights change only in the optimizer, which runs during or after a backward
/// pass. So the first forward-pass lookup after any backward-pass lookup starts a new
/// generation, and every entry converted before it is stale (reconverted in place on its next
/// use). Within one step the forward passes and the backward share one conversion (ALBEF's
/// text encoder runs three to four times a step). Code that changes weights without a backward
/// in between (loading a checkpoint into a model that already ran, finite-difference checks)
/// calls `invalidate()`.
public enum BF16Weights {
    final class Entry {
        weak var storage: Storage?
        let buffer: BF16Buffer
        var generation: Int
        init(storage: Storage, buffer: BF16Buffer, generation: Int) {
            self.storage = storage
            self.buffer = buffer
            self.generation = generation
        }
    }

    nonisolated(unsafe) static var entries: [ObjectIdentifier: Entry] = [:]
    nonisolated(unsafe) static var generation = 0
    nonisolated(unsafe) static var backwardSinceNewGeneration = false
    nonisolated(unsafe) static var lock: pthread_mutex_t = {
        var m = pthread_mutex_t()
        pthread_mutex_init(&m, nil)
        return m
    }()
    /// Statistics: weight conversions done (cached or not) and cache hits.
    nonisolated(unsafe) public private(set) static var conversions = 0
    nonisolated(unsafe) public private(set) static var hits = 0

    /// Whether `w` is cached (see the type's documentation).
    @inline(__always)
    static func isCacheable(_ w: Tensor) -> Bool { w.requiresGrad && isStoredWeight(w) }

    /// Whether `w` lives in memory of its own rather than in a pooled temporary (a weight packed
    /// into a flat parameter buffer, trainable or not), and the `no-weight-cache` ablation is off.
    @inline(__always)
    static func isStoredWeight(_ w: Tensor) -> Bool { !w.storage.pooled && !MatmulPrecision.ablated("no-weight-cache") }

    /// Whether `w` takes the split layout (`Tensor.bf16Splittable`: linear and embedding weights,
    /// 2-D, not a pooled temporary; trainable or not, so the momentum encoders' weights too):
    /// split in place, or under the `no-weight-split` ablation a copy laid out the same way
    /// (cached when `w` is cacheable).
    @inline(__always)
    static func hasSplitLayout(_ w: Tensor) -> Bool { w.bf16Splittable && w.shape.count == 2 && isStoredWeight(w) }

    /// The bf16 operand of `w` (`[O, I]` as stored, `I` = `cols`) for a GEMM in the forward
    /// (`backward: false`) or backward pass: `pointer` with leading dimension `ld` (elements).
    /// Keep the operand's owner alive during the GEMM.
    static func operand(_ w: Tensor, cols: Int, backward: Bool) -> BF16Operand {
        guard hasSplitLayout(w) else {
            let b = cachedOperand(w, backward: backward, splitLayout: false)
            return BF16Operand(pointer: b.pointer, ld: cols, owner: b)
        }
        precondition(w.shape[1] == cols, "BF16Weights.operand: weight \(w.shape) used with \(cols) input features")
        if MatmulPrecision.ablated("no-weight-split") {
            let b = cachedOperand(w, backward: backward, splitLayout: true)
            return BF16Operand(pointer: b.pointer, ld: 2 * cols, owner: b)
        }
        split(w)
        return BF16Operand(pointer: UnsafeRawPointer(w.data).assumingMemoryBound(to: UInt16.self), ld: 2 * cols, owner: w.storage)
    }

    /// The cached (or, for a weight that is not cacheable, freshly converted) bf16 copy. With
    /// `splitLayout` (the `no-weight-split` ablation) the copy is the weight split as `split`
    /// would split it — high halves rows `2I` apart; oneDNN's sums depend on the leading
    /// dimension — so the two give the same bits (`PrecisionConfigTests.testWeightSplitMatchesCache`).
    static func cachedOperand(_ w: Tensor, backward: Bool, splitLayout: Bool) -> BF16Buffer {
        guard isCacheable(w) else {
            pthread_mutex_lock(&lock); conversions += 1; pthread_mutex_unlock(&lock)
            guard splitLayout else { return BF16Buffer(converting: w.data, count: w.count) }
            let b = BF16Buffer(count: 2 * w.count)
            splitCopy(w, into: b)
            return b
        }
        let key = ObjectIdentifier(w.storage)
        let count = splitLayout ? 2 * w.count : w.count
        pthread_mutex_lock(&lock)
        if !backward && backwardSinceNewGeneration {
            generation += 1
            backwardSinceNewGeneration = false
        }
        if backward { backwardSinceNewGeneration = true }
        let gen = generation
        var entry = entries[key]
        if let e = entry, e.storage !== w.storage || e.buffer.count != count {
            entries[key] = nil  // a freed storage's identifier reused
            entry = nil
        }
        if let e = entry, e.generation == gen {
            hits += 1
            pthread_mutex_unlock(&lock)
            return e.buffer
        }
        conversions += 1
        if entry == nil {
            if entries.count % 64 == 63 { entries = entries.filter { $0.value.storage != nil } }
            let e = Entry(storage: w.storage, buffer: BF16Buffer(unpooledCount: count), generation: gen)
            entries[key] = e
            entry = e
        }
        let e = entry!
        e.generation = gen
        pthread_mutex_unlock(&lock)
        // Converted outside the lock (the pool and the thread split need no lock here); only the
        // rank that owns these weights uses this entry.
        if splitLayout {
            splitCopy(w, into: e.buffer)
        } else {
            convertToBF16(e.buffer.pointer, w.data, count: w.count)
        }
        return e.buffer
    }

    /// `w`'s values copied into `b` (`2 × w.count` bf16 slots) and split there as `split` splits in place.
    static func splitCopy(_ w: Tensor, into b: BF16Buffer) {
        let copy = UnsafeMutableRawPointer(b.pointer).assumingMemoryBound(to: Float.self)
        copy.update(from: w.data, count: w.count)
        eachRowBlock(copy, rows: w.shape[0], cols: w.shape[1], ck_bf16_split_rows)
    }

    // MARK: weights split in place

    /// A weight split in place: its shape, its storage (weakly: a freed model's entries are
    /// dropped, never joined) and the thread whose graph split it (`joinAll` joins only its own:
    /// ranks of one process, `LocalWorld`, each run a graph on their own thread).
    struct Split {
        weak var storage: Storage?
        let rows: Int, cols: Int
        let thread: pthread_t
    }
    /// Split weights by base address, and how many (read without the lock by the fp32 fast path).
    nonisolated(unsafe) static var splits: [UnsafeMutablePointer<Float>: Split] = [:] {
        didSet { splitTotal = splits.count }
    }
    nonisolated(unsafe) static var splitTotal = 0
    /// Statistics: splits and joins done, and the seconds they took (wall clock of the calls).
    nonisolated(unsafe) public private(set) static var splitCount = 0
    nonisolated(unsafe) public private(set) static var joinCount = 0
    nonisolated(unsafe) public private(set) static var splitSeconds = 0.0
    nonisolated(unsafe) public private(set) static var joinSeconds = 0.0

    /// Runs a row kernel (`ck_bf16_split_rows` / `ck_bf16_join_rows`) over the `[rows, cols]`
    /// matrix at `p`, split over threads, each block with its own `cols`-float scratch row, then
    /// `then` on the block's row range (same thread).
    static func eachRowBlock(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                             _ kernel: (UnsafeMutablePointer<Float>?, Int, Int, Int, UnsafeMutablePointer<Float>?) -> Void,
                             then: ((Range<Int>) -> Void)? = nil) {
        Threading.parallelFor(rows, grain: max(1, (1 << 15) / max(cols, 1))) { r in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { tmp in
                kernel(p, cols, r.lowerBound, r.upperBound, tmp.baseAddress!)
            }
            then?(r)
        }
    }

    /// Splits `w` in place (a no-op when it already is): every row of `I` floats becomes `I`
    /// bf16 high halves followed by `I` int16 low halves (`ck_bf16_split_rows`). Until `join`,
    /// the fp32 values are not in memory; every reader of a splittable weight joins it first.
    static func split(_ w: Tensor) {
        let p = w.data, rows = w.shape[0], cols = w.shape[1]
        pthread_mutex_lock(&lock)
        if let s = splits[p], s.storage != nil { pthread_mutex_unlock(&lock); return }  // by address: tied views share it
        splits[p] = Split(storage: w.storage, rows: rows, cols: cols, thread: pthread_self())
        pthread_mutex_unlock(&lock)
        let t0 = monotonicSeconds()
        eachRowBlock(p, rows: rows, cols: cols, ck_bf16_split_rows)
        let dt = monotonicSeconds() - t0
        pthread_mutex_lock(&lock); splitCount += 1; splitSeconds += dt; pthread_mutex_unlock(&lock)
    }

    /// Whether the weight at `pointer` is split now.
    public static func isSplit(_ pointer: UnsafeMutablePointer<Float>) -> Bool {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        return splits[pointer]?.storage != nil
    }

    /// Joins the weight whose base address is `pointer` back into fp32 (bit-exact), if split.
    /// Every reader of a splittable weight's values calls this first (the optimizer per
    /// parameter, the fp32 GEMMs, the embedding lookup); with nothing split (fp32 mode) it
    /// returns after one read of the count.
    public static func join(_ pointer: UnsafeMutablePointer<Float>) {
        _ = join(pointer, count: 0, eachBlock: nil)
    }

    /// `join` for a reader that passes over the whole weight once (AdamW over its `count`
    /// floats): the weight is joined row block by row block and `eachBlock` runs on each block's
    /// element range right after, on the same thread, so the join adds no pass over memory.
    /// Returns whether `eachBlock` ran; when it did not (the weight was not split, or `count` is
    /// not the whole weight, which is then joined first), the caller makes its own pass.
    public static func join(_ pointer: UnsafeMutablePointer<Float>, count: Int,
                            eachBlock: ((Range<Int>) -> Void)?) -> Bool {
        // A weight is split by the thread that runs its graph and joined by it or after it
        // (its optimizer, also on the reduction thread), so this unlocked read sees that split.
        if splitTotal == 0 { return false }
        pthread_mutex_lock(&lock)
        let split = splits.removeValue(forKey: pointer)
        pthread_mutex_unlock(&lock)
        guard let s = split, s.storage != nil else { return false }
        let cols = s.cols
        var fused: ((Range<Int>) -> Void)?
        if let eachBlock, s.rows * cols == count { fused = { r in eachBlock(r.lowerBound * cols ..< r.upperBound * cols) } }
        let t0 = monotonicSeconds()
        eachRowBlock(pointer, rows: s.rows, cols: cols, ck_bf16_join_rows, then: fused)
        let dt = fused == nil ? monotonicSeconds() - t0 : 0  // a fused join's time is its reader's
        pthread_mutex_lock(&lock); joinCount += 1; joinSeconds += dt; pthread_mutex_unlock(&lock)
        return fused != nil
    }

    /// Joins every weight the calling thread's graph split (end of a step, before anything
    /// reads parameters). Another thread's splits (another rank of the process, mid-forward)
    /// are left to it.
    public static func joinAll() {
        if splitTotal == 0 { return }
        let me = pthread_self()
        pthread_mutex_lock(&lock)
        let mine = splits.filter { pthread_equal($0.value.thread, me) != 0 }.map(\.key)
        pthread_mutex_unlock(&lock)
        for p in mine { join(p) }
    }

    /// Number of weights split now.
    public static var splitNow: Int {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        return splits.values.filter { $0.storage != nil }.count
    }

    /// Records that a backward pass ran a GEMM without a weight lookup (its input needed no
    /// gradient), so the next forward starts a new generation all the same.
    static func noteBackward() {
        pthread_mutex_lock(&lock)
        backwardSinceNewGeneration = true
        pthread_mutex_unlock(&lock)
    }

    /// Marks every cached copy stale (after weights changed outside an optimizer step).
    public static func invalidate() {
        pthread_mutex_lock(&lock)
        generation += 1
        backwardSinceNewGeneration = false
        pthread_mutex_unlock(&lock)
    }

    /// Frees every cached copy (and joins every split weight).
    public static func clear() {
        joinAll()
        pthread_mutex_lock(&lock)
        entries = [:]
        generation += 1
        pthread_mutex_unlock(&lock)
    }

    /// Bytes held by cached copies.
    public static var cachedBytes: Int {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        return entries.values.reduce(0) { $0 + ($1.storage == nil ? 0 : $1.buffer.count * 2) }
    }

    /// (conversions, hits) so far.
    public static var counters: (conversions: Int, hits: Int) {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        return (conversions, hits)
    }
}
