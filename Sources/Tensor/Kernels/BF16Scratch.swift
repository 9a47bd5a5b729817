#if canImport(Glibc)
import Glibc
#endif

/// Per-thread memory for bf16 temporaries: the operands a bf16 GEMM rounds at the call
/// (activations, output gradients, attention probabilities), which live only while one kernel
/// runs.
///
/// A bump allocator: `take` hands out the next 64-byte-aligned bytes of one block, `give`
/// counts them back, and when nothing taken from this arena is live any more the block is
/// reused from its start. A take that does not fit the block gets an exact allocation of its
/// own; when the arena next empties, the block grows to everything asked for since it last
/// emptied, so from the second step on every temporary fits and nothing is allocated. The block
/// is as big as the largest set of temporaries one kernel holds at once (base, batch 4: the
/// FFN's weight-gradient GEMM, about 8 MB), whatever the step's peak.
///
/// Why not the buffer pool: a temporary taken from the pool takes a power-of-two buffer of
/// its own size class while it lives, and the activations and gradients that would have
/// reused that buffer take another one (a fresh allocation, or an idle buffer of a larger
/// class), so at the step's peak the pool holds tens of MiB more than in fp32 (base: 43 MiB
/// more from the system, measured), though no temporary is live then.
///
/// Each thread that runs a kernel (the graph's thread, `Threading`'s workers, the reduction
/// thread) has its own arena (`current`), freed when the thread ends and its buffers are gone.
/// A buffer keeps its arena alive and may be given back from another thread (the arena locks).
/// Blocks and overflow allocations come from `BufferPool.systemAllocate` (pages of their own
/// from 256 KiB up, outside malloc's heap).
final class ScratchArena: @unchecked Sendable {
    private var block: UnsafeMutableRawPointer?
    private var capacity = 0
    /// Bytes handed out from `block` since the arena last emptied, and asked for in all.
    private var top = 0, demand = 0
    private var live = 0
    private var lock = pthread_mutex_t()

    init() { pthread_mutex_init(&lock, nil) }

    /// `bytes` rounded up to whole 64-byte lines.
    static func rounded(_ bytes: Int) -> Int { (max(bytes, 1) + 63) & ~63 }

    deinit {
        if let block { BufferPool.systemFree(block, bytes: capacity) }
        ScratchArena.account(-capacity)
        pthread_mutex_destroy(&lock)
    }

    /// `bytes` (rounded up to 64) of uninitialised memory, 64-byte aligned, and whether it is in
    /// the block (else an allocation of its own, which `give` frees).
    func take(_ bytes: Int) -> (pointer: UnsafeMutableRawPointer, inBlock: Bool) {
        let b = ScratchArena.rounded(bytes)
        pthread_mutex_lock(&lock)
        live += 1
        demand += b
        if let block, top + b <= capacity {
            let p = block + top
            top += b
            pthread_mutex_unlock(&lock)
            return (p, true)
        }
        pthread_mutex_unlock(&lock)
        return (BufferPool.systemAllocate(b), false)
    }

    func give(_ p: UnsafeMutableRawPointer, inBlock: Bool, bytes: Int) {
        if !inBlock { BufferPool.systemFree(p, bytes: ScratchArena.rounded(bytes)) }
        pthread_mutex_lock(&lock)
        live -= 1
        if live == 0 {
            if demand > capacity {
                // Grown only while nothing in it is live: every temporary of the largest kernel so far fits next time.
                if let block { BufferPool.systemFree(block, bytes: capacity) }
                let grown = (demand + (1 << 16) - 1) & ~((1 << 16) - 1)
                block = BufferPool.systemAllocate(grown)
                ScratchArena.account(grown - capacity)
                capacity = grown
            }
            top = 0
            demand = 0
        }
        pthread_mutex_unlock(&lock)
    }

    // MARK: one arena per thread

    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        let rc = pthread_key_create(&k) { p in
            if let p { Unmanaged<ScratchArena>.fromOpaque(p).release() }
        }
        precondition(rc == 0, "ScratchArena: pthread_key_create failed (\(rc))")
        return k
    }()

    /// The calling thread's arena (made at its first use).
    static var current: ScratchArena {
        if let p = pthread_getspecific(key) { return Unmanaged<ScratchArena>.fromOpaque(p).takeUnretainedValue() }
        let a = ScratchArena()
        pthread_setspecific(key, Unmanaged.passRetained(a).toOpaque())
        return a
    }

    // MARK: statistics

    nonisolated(unsafe) private static var total = 0
    nonisolated(unsafe) private static var totalLock: pthread_mutex_t = {
        var m = pthread_mutex_t()
        pthread_mutex_init(&m, nil)
        return m
    }()
    private static func account(_ delta: Int) {
        pthread_mutex_lock(&totalLock); total += delta; pthread_mutex_unlock(&totalLock)
    }
    /// Bytes held by every thread's arena block (exact allocations in flight not counted).
    static var blockBytes: Int {
        pthread_mutex_lock(&totalLock); defer { pthread_mutex_unlock(&totalLock) }
        return total
    }
}

/// Bytes the bf16 temporaries' per-thread arenas hold (`ScratchArena`).
public var bf16ScratchBytes: Int { ScratchArena.blockBytes }
