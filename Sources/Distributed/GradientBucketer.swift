/// Cuts a flat gradient buffer into buckets for overlapped allreduce (DDP style), as a pure
/// index calculation.
///
/// Segments (one per parameter, `(offset, count)` in layout order) are taken in *reverse*
/// order — roughly the order backward finishes them — and grouped into contiguous buckets of at
/// least `targetElements` (the last may be smaller). Every segment is in exactly one bucket;
/// bucket ranges are disjoint and cover the buffer.
public struct GradientBucketer: Sendable {
    /// Flat element range of each bucket, in the order they are expected to become ready.
    public let buckets: [Range<Int>]
    /// Bucket index of each segment (indexed like the input segments).
    public let bucketOfSegment: [Int]
    /// Number of segments in each bucket.
    public let segmentsPerBucket: [Int]

    public init(segments: [(offset: Int, count: Int)], targetElements: Int) {
        var buckets: [Range<Int>] = []
        var owner = [Int](repeating: 0, count: segments.count)
        var perBucket: [Int] = []
        var hi: Int? = nil, lo = 0, n = 0, members = 0
        for i in stride(from: segments.count - 1, through: 0, by: -1) {
            let s = segments[i]
            if hi == nil { hi = s.offset + s.count }
            lo = s.offset
            n += s.count
            owner[i] = buckets.count
            members += 1
            if n >= targetElements {
                buckets.append(lo..<hi!)
                perBucket.append(members)
                hi = nil; n = 0; members = 0
            }
        }
        if let h = hi { buckets.append(lo..<h); perBucket.append(members) }
        self.buckets = buckets
        bucketOfSegment = owner
        segmentsPerBucket = perBucket
    }
}
