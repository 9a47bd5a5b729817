/// A range of samples `[start, end)` of one shard in one epoch: the unit the ledger accounts in.
public struct SampleRange: Codable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var epoch: UInt32
    public var shard: UInt32
    public var start: UInt64
    public var end: UInt64
    public init(epoch: UInt32, shard: UInt32, start: UInt64, end: UInt64) {
        self.epoch = epoch
        self.shard = shard
        self.start = start
        self.end = end
    }
    public var count: UInt64 { end - start }
    public static func < (a: SampleRange, b: SampleRange) -> Bool {
        (a.epoch, a.shard, a.start, a.end) < (b.epoch, b.shard, b.start, b.end)
    }
    public var description: String { "e\(epoch)/s\(shard)[\(start),\(end))" }

    /// Sorts and merges adjacent or overlapping ranges of the same (epoch, shard).
    public static func merged(_ ranges: [SampleRange]) -> [SampleRange] {
        var out: [SampleRange] = []
        for r in ranges.sorted() where r.count > 0 {
            if var last = out.last, last.epoch == r.epoch, last.shard == r.shard, r.start <= last.end {
                last.end = max(last.end, r.end)
                out[out.count - 1] = last
            } else {
                out.append(r)
            }
        }
        return out
    }
}

/// The epoch plan: for each epoch a seeded permutation of the shards, each shard cut into ranges of
/// at most `leaseSize` samples, handed out in order. Ranges given back (a rank returned part of a
/// lease, or a rollback revoked uncommitted leases) are re-issued first, oldest plan position first.
///
/// Deterministic: the same shard sizes, seed, lease size and sequence of calls give the same ranges.
public struct LeasePlanner: Codable, Hashable, Sendable {
    public let shardSamples: [UInt64]
    public let seed: UInt64
    public let leaseSize: UInt64
    public let epochs: UInt32

    /// Epoch whose plan is being handed out (== `epochs` when exhausted).
    public private(set) var epoch: UInt32 = 0
    /// Position in the current epoch's shard order.
    private var orderIndex: Int = 0
    /// Next sample in the current shard.
    private var offset: UInt64 = 0
    /// Current epoch's shard order.
    private var order: [Int]
    /// Ranges to re-issue before continuing the plan.
    public private(set) var requeued: [SampleRange] = []
    /// Samples planned (first issue) in the current epoch.
    public private(set) var issuedThisEpoch: UInt64 = 0

    public init(shardSamples: [UInt64], seed: UInt64, leaseSize: UInt64, epochs: UInt32) {
        precondition(leaseSize > 0, "LeasePlanner: leaseSize must be > 0")
        self.shardSamples = shardSamples
        self.seed = seed
        self.leaseSize = leaseSize
        self.epochs = epochs
        order = LeasePlanner.shardOrder(epoch: 0, seed: seed, shardCount: shardSamples.count)
    }

    /// Samples per epoch.
    public var samplesPerEpoch: UInt64 { shardSamples.reduce(0, +) }

    /// True when every epoch has been handed out and nothing waits to be re-issued.
    public var isExhausted: Bool { requeued.isEmpty && epoch >= epochs }

    /// The seeded shard permutation for an epoch (SplitMix64 + Fisher–Yates).
    ///
    /// Concretely: `state = seed ^ (epoch * 0x9E3779B97F4A7C15)`, then for i from n-1 down to 1,
    /// swap i with `next() % (i + 1)`.
    public static func shardOrder(epoch: UInt32, seed: UInt64, shardCount: Int) -> [Int] {
        var state = seed ^ (UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15)
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var order = Array(0..<shardCount)
        if shardCount > 1 {
            for i in stride(from: shardCount - 1, to: 0, by: -1) {
                let j = Int(next() % UInt64(i + 1))
                order.swapAt(i, j)
            }
        }
        return order
    }

    /// The next range to lease, or nil when exhausted.
    public mutating func next() -> SampleRange? {
        if !requeued.isEmpty { return requeued.removeFirst() }
        while epoch < epochs {
            while orderIndex < order.count {
                let shard = order[orderIndex]
                let samples = shardSamples[shard]
                if offset < samples {
                    let end = min(samples, offset + leaseSize)
                    let range = SampleRange(epoch: epoch, shard: UInt32(shard), start: offset, end: end)
                    offset = end
                    issuedThisEpoch += range.count
                    return range
                }
                orderIndex += 1
                offset = 0
            }
            epoch += 1
            orderIndex = 0
            offset = 0
            issuedThisEpoch = 0
            if epoch < epochs { order = LeasePlanner.shardOrder(epoch: epoch, seed: seed, shardCount: shardSamples.count) }
        }
        return nil
    }

    /// Gives ranges back to be re-issued before anything new (kept sorted by epoch and position).
    public mutating func requeue(_ ranges: [SampleRange]) {
        let fresh = ranges.filter { $0.count > 0 }
        if fresh.isEmpty { return }
        requeued = SampleRange.merged(requeued + fresh).flatMap { split($0) }
    }

    /// Cuts a range into lease-size pieces.
    private func split(_ r: SampleRange) -> [SampleRange] {
        var out: [SampleRange] = []
        var s = r.start
        while s < r.end {
            let e = min(r.end, s + leaseSize)
            out.append(SampleRange(epoch: r.epoch, shard: r.shard, start: s, end: e))
            s = e
        }
        return out
    }
}
