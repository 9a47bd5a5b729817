import Tensor

/// Gradient buckets reduced in bf16: half the bytes on the wire of a float32 allreduce.
///
/// A bucket's float32 values are rounded to bf16 (`convertToBF16`: round to nearest, ties to
/// even), summed across ranks with each pairwise sum computed in float32 and rounded to bf16 again
/// (`CMPI_BF16_SUM`; `LocalCommunicator` adds in rank order the same way), and widened back to
/// float32 in place. The relative rounding of one value is at most 2⁻⁹; a sum over W ranks carries
/// at most ⌈log₂ W⌉ + 1 such roundings on a tree (W on a chain). Master weights, AdamW moments and
/// everything after the reduction stay float32, and every rank gets the same bits (the operation
/// is commutative, and a collective hands every rank the same reduced values). PyTorch's
/// counterpart is DDP's `bf16_compress_hook`.
extension Communicator {
    /// In-place sum of `count` floats reduced in bf16; the result is float32.
    public func allReduceSumBF16(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1, count > 0 else { return }
        let half = BF16Buffer(count: count)
        convertToBF16(half.pointer, buffer, count: count)
        allReduceSumBF16Bits(half.pointer, count: count)
        convertFromBF16(buffer, half.pointer, count: count)
    }
}
