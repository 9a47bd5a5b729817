import XCTest
@testable import Distributed

final class GradientBucketerTests: XCTestCase {
    func testBucketsCoverEverySegmentOnceInReverseOrder() {
        var rng = SystemRandomNumberGenerator()
        for trial in 0..<50 {
            var segs: [(offset: Int, count: Int)] = []
            var off = 0
            for _ in 0..<Int.random(in: 1...40, using: &rng) {
                let c = Int.random(in: 1...1000, using: &rng)
                segs.append((off, c)); off += c
            }
            let target = [1, 100, 2500, 1 << 20][trial % 4]
            let b = GradientBucketer(segments: segs, targetElements: target)
            // Disjoint, contiguous, covering [0, off), descending.
            var covered = [Int](repeating: 0, count: off)
            for r in b.buckets { for i in r { covered[i] += 1 } }
            XCTAssertTrue(covered.allSatisfy { $0 == 1 })
            for k in 1..<max(b.buckets.count, 1) where b.buckets.count > 1 { XCTAssertEqual(b.buckets[k].upperBound, b.buckets[k - 1].lowerBound) }
            // Each segment lies inside its bucket; member counts add up.
            for (i, s) in segs.enumerated() {
                let r = b.buckets[b.bucketOfSegment[i]]
                XCTAssertTrue(r.contains(s.offset) && r.contains(s.offset + s.count - 1))
            }
            XCTAssertEqual(b.segmentsPerBucket.reduce(0, +), segs.count)
            // Every bucket but the last reaches the target.
            for r in b.buckets.dropLast() { XCTAssertGreaterThanOrEqual(r.count, target) }
        }
    }
}
