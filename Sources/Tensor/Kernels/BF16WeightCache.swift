#if canImport(Glibc)
import Glibc
#endif

/// bf16 copies of the trainable weights, converted once per training step instead of per GEMM.
///
/// A weight is cached when it is a trainable parameter packed into a flat parameter buffer
/// (`requiresGrad`, storage borrowed from the buffer, not pooled); anything else (momentum
/// weights, which run forward once per step; unpacked tensors; activations) is converted at the
/// call. Entries are keyed by the weight's `Storage` object (weakly held: a freed model's
/// entries are never reused, even when a new one lands at the same address) and carry the
/// generation they were converted in. The copies live outside the buffer pool, each in memory
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
    static func isCacheable(_ w: Tensor) -> Bool { w.requiresGrad && !w.storage.pooled && !MatmulPrecision.ablated("no-weight-cache") }

    /// The bf16 copy of `w`'s values (`[O, I]` as stored) for a GEMM in the forward
    /// (`backward: false`) or backward pass. Keep the returned buffer alive during the GEMM.
    static func operand(_ w: Tensor, backward: Bool) -> BF16Buffer {
        guard isCacheable(w) else {
            pthread_mutex_lock(&lock); conversions += 1; pthread_mutex_unlock(&lock)
            return BF16Buffer(converting: w.data, count: w.count)
        }
        let key = ObjectIdentifier(w.storage)
        pthread_mutex_lock(&lock)
        if !backward && backwardSinceNewGeneration {
            generation += 1
            backwardSinceNewGeneration = false
        }
        if backward { backwardSinceNewGeneration = true }
        let gen = generation
        var entry = entries[key]
        if let e = entry, e.storage !== w.storage || e.buffer.count != w.count {
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
            let e = Entry(storage: w.storage, buffer: BF16Buffer(unpooledCount: w.count), generation: gen)
            entries[key] = e
            entry = e
        }
        let e = entry!
        e.generation = gen
        pthread_mutex_unlock(&lock)
        // Converted outside the lock (the pool and the thread split need no lock here); only the
        // rank that owns these weights uses this entry.
        convertToBF16(e.buffer.pointer, w.data, count: w.count)
        return e.buffer
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

    /// Frees every cached copy.
    public static func clear() {
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
