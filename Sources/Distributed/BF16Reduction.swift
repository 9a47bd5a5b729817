/// Gradient buckets reduced in bf16: half the bytes on the wire of a float32 allreduce.
///
/// A bucket's float32 values are rounded to bf16 (the top 16 bits of the float32 pattern, round
/// to nearest, ties to even), summed across ranks with each pairwise sum computed in float32 and
/// rounded to bf16 again (`CMPI_BF16_SUM`; `LocalCommunicator` adds in rank order the same way),
/// and widened back to float32 in place. The relative rounding of one value is at most 2⁻⁹; a sum
/// over W ranks carries at most ⌈log₂ W⌉ + 1 such roundings on a tree (W on a chain). Master
/// weights, AdamW moments and everything after the reduction stay float32, and every rank gets
/// the same bits (the operation is commutative, and a collective hands every rank the same
/// reduced values). PyTorch's counterpart is DDP's `bf16_compress_hook`.
public enum BF16 {
    /// float32 → bf16 bits, round to nearest even (NaN stays a quiet NaN).
    @inlinable public static func bits(_ f: Float) -> UInt16 {
        var u = f.bitPattern
        if u & 0x7fff_ffff > 0x7f80_0000 { return UInt16(truncatingIfNeeded: (u >> 16) | 0x40) }
        u &+= 0x7fff &+ ((u >> 16) & 1)
        return UInt16(truncatingIfNeeded: u >> 16)
    }

    /// bf16 bits → float32 (exact).
    @inlinable public static func float(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    /// The float32 value rounded to bf16 precision.
    @inlinable public static func rounded(_ f: Float) -> Float { float(bits(f)) }
}

extension Communicator {
    /// In-place sum of `count` floats reduced in bf16 (see ``BF16``); the result is float32.
    public func allReduceSumBF16(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1, count > 0 else { return }
        let half = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
        defer { half.deallocate() }
        for i in 0..<count { half[i] = BF16.bits(buffer[i]) }
        allReduceSumBF16Bits(half, count: count)
        for i in 0..<count { buffer[i] = BF16.float(half[i]) }
    }
}
