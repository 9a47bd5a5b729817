#if canImport(Glibc)
import Glibc
#endif

/// Reference-counted Float32 memory. Owned storage comes from `BufferPool` and goes back to it
/// on `deinit`, so a steady-state training step reuses the same buffers instead of touching fresh
/// pages. Borrowed storage (a view into a flat parameter buffer) frees nothing.
public final class Storage {
    /// Base address (64-byte aligned when owned).
    public let pointer: UnsafeMutablePointer<Float>
    /// Number of Float32 elements.
    public let count: Int
    let capacity: Int
    let owner: AnyObject?
    let pooled: Bool

    /// Fresh storage of `count` elements from the pool; contents are zero when `zeroed`.
    public init(count: Int, zeroed: Bool = true) {
        let (p, cap) = BufferPool.shared.take(count)
        pointer = p
        capacity = cap
        self.count = count
        owner = nil
        pooled = true
        if zeroed && count > 0 { p.update(repeating: 0, count: count) }
    }

    /// A non-owning view of `count` elements at `pointer`, kept alive by `owner`.
    public init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject?) {
        self.pointer = pointer
        self.count = count
        capacity = count
        self.owner = owner
        pooled = false
    }

    deinit {
        if pooled { BufferPool.shared.give(pointer, capacity: capacity) }
    }

    /// What a tensor whose memory was given back early points at (`Tensor.convertingStorageToBF16`): no
    /// elements, at the start of 1 GiB of address space mapped with no access, so a read or
    /// write through a stale `data` pointer faults at once instead of reading someone else's
    /// buffer.
    static let released: Storage = {
        let bytes = 1 << 30
        guard let p = mmap(nil, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), p != MAP_FAILED else {
            fatalError("Storage: mmap of \(bytes) bytes of reserved address space failed (errno \(errno))")
        }
        return Storage(borrowing: p.bindMemory(to: Float.self, capacity: 1), count: 0, owner: nil)
    }()
}

/// A size-bucketed free list of 64-byte-aligned Float32 buffers (power-of-two capacities).
///
/// `take` reuses a freed buffer of the same bucket when one exists (else of one of the next two
/// larger buckets); `give` returns it to its own bucket. The pool keeps at most `maxBytesCached`
/// idle; the rest goes back to the system.
public final class BufferPool: @unchecked Sendable {
    public static let shared = BufferPool()
    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var cachedBytes = 0
    private var lock = pthread_mutex_t()
    /// Upper bound on idle cached memory.
    public var maxBytesCached = 8 << 30
    /// Statistics: buffers allocated from the system / served from the cache.
    public private(set) var systemAllocations = 0
    public private(set) var reuses = 0
    /// Bytes handed out and not yet given back; the most ever; bytes obtained from the system.
    public private(set) var liveBytes = 0
    public private(set) var peakLiveBytes = 0
    public private(set) var systemBytes = 0
    /// With `ALBEF_POOL_TRACE` set: live buffers per capacity, and a copy taken at the peak.
    let trace = getenv("ALBEF_POOL_TRACE") != nil
    var liveByCapacity: [Int: Int] = [:]
    public private(set) var liveByCapacityAtPeak: [Int: Int] = [:]

    init() { pthread_mutex_init(&lock, nil) }

    @inline(__always) static func bucket(_ n: Int) -> Int {
        if n <= 16 { return 16 }
        return 1 << (Int.bitWidth - (n - 1).leadingZeroBitCount)
    }

    func take(_ n: Int) -> (UnsafeMutablePointer<Float>, Int) {
        let cap = BufferPool.bucket(max(n, 1))
        pthread_mutex_lock(&lock)
        // An idle buffer of this size class, else one of the next two larger classes (its pages
        // are already resident; a fresh allocation would add new ones while it sits idle).
        for c in [cap, cap * 2, cap * 4] {
            if var list = free[c], let p = list.popLast() {
                free[c] = list
                cachedBytes -= c * 4
                reuses += 1
                noteTake(c)
                pthread_mutex_unlock(&lock)
                return (p, c)
            }
        }
        systemAllocations += 1
        systemBytes += cap * 4
        noteTake(cap)
        pthread_mutex_unlock(&lock)
        let raw = BufferPool.systemAllocate(cap * 4)
        return (raw.bindMemory(to: Float.self, capacity: cap), cap)
    }

    /// Buffers of at least this many bytes get pages of their own (`mmap`), outside malloc's
    /// heap. The pool keeps its buffers for the whole run; in glibc's heap (which serves blocks
    /// up to its sliding mmap threshold, 32 MiB at most) they sit between the short-lived blocks
    /// of other code, whose freed space then stays resident: 68 MiB of free heap at the end of a
    /// base bf16 step, measured. Below this size: malloc.
    static let mmapBytes = 256 << 10

    static func systemAllocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        guard bytes >= mmapBytes else { return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64) }
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("BufferPool: out of memory: mmap of \(bytes) bytes failed (errno \(errno))")
        }
        return p
    }

    static func systemFree(_ p: UnsafeMutableRawPointer, bytes: Int) {
        if bytes >= mmapBytes { munmap(p, bytes) } else { p.deallocate() }
    }

    /// Called with the lock held.
    @inline(__always) private func noteTake(_ cap: Int) {
        liveBytes += cap * 4
        if trace { liveByCapacity[cap, default: 0] += 1 }
        if liveBytes > peakLiveBytes {
            peakLiveBytes = liveBytes
            if trace { liveByCapacityAtPeak = liveByCapacity }
        }
    }

    func give(_ p: UnsafeMutablePointer<Float>, capacity: Int) {
        pthread_mutex_lock(&lock)
        liveBytes -= capacity * 4
        if trace { liveByCapacity[capacity, default: 0] -= 1 }
        if cachedBytes + capacity * 4 <= maxBytesCached {
            free[capacity, default: []].append(p)
            cachedBytes += capacity * 4
            pthread_mutex_unlock(&lock)
        } else {
            systemBytes -= capacity * 4
            pthread_mutex_unlock(&lock)
            BufferPool.systemFree(UnsafeMutableRawPointer(p), bytes: capacity * 4)
        }
    }

    /// Releases every idle buffer to the system.
    public func trim() {
        pthread_mutex_lock(&lock)
        for (cap, list) in free { for p in list { BufferPool.systemFree(UnsafeMutableRawPointer(p), bytes: cap * 4) }; systemBytes -= cap * 4 * list.count }
        free = [:]
        cachedBytes = 0
        pthread_mutex_unlock(&lock)
    }

    /// (system allocations, reuses) so far; a steady-state step should only reuse.
    public var counters: (allocations: Int, reuses: Int) {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        return (systemAllocations, reuses)
    }
}
