import CKernels

/// bfloat16 values (bit patterns): a temporary in the calling thread's scratch arena
/// (`init(count:)`, `ScratchArena`) or a long-lived copy in memory of its exact size
/// (`init(unpooledCount:)`).
public final class BF16Buffer {
    private enum Backing {
        case scratch(ScratchArena, inBlock: Bool)
        case owned(RawAllocation)
        case pooled(Storage)
    }
    private let backing: Backing
    /// Number of bf16 elements.
    public let count: Int
    /// Element pointer (64-byte aligned).
    public let pointer: UnsafeMutablePointer<UInt16>

    /// Uninitialised room for `count` bf16 values, for the duration of one kernel: from the
    /// calling thread's scratch arena, outside the buffer pool (see `ScratchArena` for why).
    public init(count: Int) {
        self.count = count
        let arena = ScratchArena.current
        let (p, inBlock) = arena.take(count * 2)
        pointer = p.bindMemory(to: UInt16.self, capacity: count)
        backing = .scratch(arena, inBlock: inBlock)
    }

    /// Uninitialised room for `count` bf16 values in memory of its own, exactly that size
    /// (64-byte aligned), outside the buffer pool: for long-lived copies (the bf16 weight cache),
    /// which in the pool would take a power-of-two bucket (up to 2× their size) and keep it.
    public init(unpooledCount count: Int) {
        self.count = count
        let owner = RawAllocation(byteCount: max(count, 1) * 2)
        pointer = owner.pointer.bindMemory(to: UInt16.self, capacity: count)
        backing = .owned(owner)
    }

    /// `count` bf16 values already written at the start of `storage` (which becomes theirs).
    init(reusing storage: Storage, count: Int) {
        precondition(storage.count * 2 >= count, "BF16Buffer: storage of \(storage.count) floats < \(count) bf16")
        self.count = count
        pointer = UnsafeMutableRawPointer(storage.pointer).bindMemory(to: UInt16.self, capacity: count)
        backing = .pooled(storage)
    }

    deinit {
        if case .scratch(let arena, let inBlock) = backing { arena.give(UnsafeMutableRawPointer(pointer), inBlock: inBlock, bytes: count * 2) }
    }

    /// Whether this is a temporary in a scratch arena (else memory of its own).
    var isScratch: Bool { if case .scratch = backing { return true } else { return false } }

    /// `src[0..<count]` rounded to bf16 (threads over chunks).
    public convenience init(converting src: UnsafePointer<Float>, count: Int) {
        self.init(count: count)
        convertToBF16(pointer, src, count: count)
    }

    /// The `[rows, cols]` matrix at `src` with leading dimension `lds`, rounded to bf16 into a
    /// dense `[rows, cols]` buffer (the columns a strided view reads, packed).
    public convenience init(converting src: UnsafePointer<Float>, rows: Int, cols: Int, lds: Int) {
        self.init(count: rows * cols)
        convertToBF16(pointer, ldd: cols, src, lds: lds, rows: rows, cols: cols)
    }

    /// The values as Float32 (exact).
    public var floats: [Float] {
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { ck_bf16_to_f32($0.baseAddress!, pointer, 0, count) }
        return out
    }
}

/// dst[i] = bf16(src[i]), round to nearest even (C core `ck_f32_to_bf16`, AVX-512 or portable,
/// same bits), split over threads. PyTorch counterpart: `x.to(torch.bfloat16)`.
public func convertToBF16(_ dst: UnsafeMutablePointer<UInt16>, _ src: UnsafePointer<Float>, count: Int) {
    Threading.parallelFor(count, grain: 1 << 15) { r in ck_f32_to_bf16(dst, src, r.lowerBound, r.upperBound) }
}

/// Strided rows: dst[r·ldd + c] = bf16(src[r·lds + c]) for r < rows, c < cols, split over threads.
public func convertToBF16(_ dst: UnsafeMutablePointer<UInt16>, ldd: Int, _ src: UnsafePointer<Float>, lds: Int,
                          rows: Int, cols: Int) {
    Threading.parallelFor(rows, grain: max(1, (1 << 15) / max(cols, 1))) { r in
        ck_f32_to_bf16_rows(dst, ldd, src, lds, cols, r.lowerBound, r.upperBound)
    }
}

/// One value rounded to bf16 and back (the value a bf16 GEMM sees for `x`).
@inline(__always)
public func roundedToBF16(_ x: Float) -> Float {
    var v = x, h: UInt16 = 0, back: Float = 0
    ck_f32_to_bf16(&h, &v, 0, 1)
    ck_bf16_to_f32(&back, &h, 0, 1)
    return back
}

/// dst[i] = Float(src[i]) (exact), split over threads.
public func convertFromBF16(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<UInt16>, count: Int) {
    Threading.parallelFor(count, grain: 1 << 15) { r in ck_bf16_to_f32(dst, src, r.lowerBound, r.upperBound) }
}

/// One value's bf16 bit pattern (round to nearest even).
@inline(__always)
public func bf16Bits(_ x: Float) -> UInt16 {
    var v = x, h: UInt16 = 0
    ck_f32_to_bf16(&h, &v, 0, 1)
    return h
}

/// The Float32 value of bf16 bits (exact).
@inline(__always)
public func floatFromBF16(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

/// Memory from the system (`BufferPool.systemAllocate`: pages of its own from 256 KiB up),
/// freed with its owner.
final class RawAllocation {
    let pointer: UnsafeMutableRawPointer
    let byteCount: Int
    init(byteCount: Int) {
        self.byteCount = byteCount
        pointer = BufferPool.systemAllocate(byteCount)
    }
    deinit { BufferPool.systemFree(pointer, bytes: byteCount) }
}
