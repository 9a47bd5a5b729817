/// The epoch plan, dealt to the ranks deterministically.
///
/// Epoch e's order is the shards permuted by ``shardOrder(epoch:seed:shardCount:)`` and
/// concatenated: plan positions 0..<N. With W ranks, rank r's *stream* is positions
/// [r·n, (r+1)·n) with n = ⌊N/W⌋ — equal shares, as PyTorch's `DistributedSampler` gives, but
/// contiguous, so a rank reads whole runs of shards; positions [W·n, N) are the epoch's *tail*,
/// recorded as dropped when the epoch closes. A stream is cut into leases at shard boundaries and
/// every `leaseSize` samples and handed to its rank only, in order: which rank trains which sample
/// at which step follows from (seed, corpus, W, per-rank batch), never from the timing of lease
/// requests. Each rank's loader drops its last partial batch; the ranks agree on the end of an
/// epoch (the first rank without a full batch ends it for all), and what is left of the epoch is
/// dropped by ``close(epochsBefore:)``.
///
/// Ranges given back (a lease returned early, a rollback) go back to the rank whose stream holds
/// them, in plan order. ``changeWorldSize(to:)`` re-deals what is left of the started epochs over
/// the new number of ranks, in equal contiguous pieces; later epochs are planned for the new size.
public struct LeasePlanner: Codable, Hashable, Sendable {
    public let shardSamples: [Int]
    public let seed: UInt64
    public let leaseSize: Int
    public let epochs: Int
    public private(set) var worldSize: Int
    /// Per started epoch: the plan positions where each rank's stream starts, and (last entry)
    /// where the tail starts (W + 1 entries).
    public private(set) var boundaries: [Int: [Int]] = [:]
    /// Per rank: the last epoch whose stream went into `queues` (-1: none yet).
    public private(set) var rankEpoch: [Int]
    /// Per rank: stream ranges not yet leased, in plan order (epoch, then plan position).
    public private(set) var queues: [[SampleRange]]
    /// Samples leased (net of ranges given back) per epoch.
    public private(set) var issued: [Int: Int] = [:]

    public init(shardSamples: [Int], seed: UInt64, leaseSize: Int, epochs: Int, worldSize: Int) {
        precondition(leaseSize > 0, "LeasePlanner: leaseSize must be > 0")
        precondition(worldSize > 0, "LeasePlanner: worldSize must be > 0")
        self.shardSamples = shardSamples
        self.seed = seed
        self.leaseSize = leaseSize
        self.epochs = epochs
        self.worldSize = worldSize
        rankEpoch = Array(repeating: -1, count: worldSize)
        queues = Array(repeating: [], count: worldSize)
    }

    /// Samples per epoch.
    public var samplesPerEpoch: Int { shardSamples.reduce(0, +) }

    /// Samples in each rank's stream of an epoch planned for `worldSize` ranks (⌊N/W⌋).
    public var streamLength: Int { samplesPerEpoch / worldSize }

    /// True when nothing more will be leased to `rank` in any epoch.
    public func isExhausted(rank: Int) -> Bool {
        guard rank >= 0, rank < worldSize else { return true }
        return queues[rank].isEmpty && rankEpoch[rank] >= epochs - 1
    }

    /// True when nothing more will be leased to any rank.
    public var isExhausted: Bool { (0..<worldSize).allSatisfy { isExhausted(rank: $0) } }

    /// The epoch `rank` is being leased from (its last started epoch; 0 before any).
    public func epoch(of rank: Int) -> Int { max(0, rank < worldSize ? rankEpoch[rank] : 0) }

    /// The seeded shard permutation for an epoch (SplitMix64 + Fisher–Yates).
    ///
    /// Concretely: `state = seed ^ (epoch * 0x9E3779B97F4A7C15)`, then for i from n-1 down to 1,
    /// swap i with `next() % (i + 1)`.
    public static func shardOrder(epoch: Int, seed: UInt64, shardCount: Int) -> [Int] {
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

    /// Plan position of each shard's first sample in epoch `epoch` (indexed by shard).
    public func shardStarts(epoch: Int) -> [Int] {
        var starts = Array(repeating: 0, count: shardSamples.count)
        var p = 0
        for s in LeasePlanner.shardOrder(epoch: epoch, seed: seed, shardCount: shardSamples.count) {
            starts[s] = p
            p += shardSamples[s]
        }
        return starts
    }

    /// The ranges of epoch `epoch` covering plan positions [from, to), in plan order.
    public func ranges(epoch: Int, from: Int, to: Int) -> [SampleRange] {
        var out: [SampleRange] = []
        var p = 0
        for s in LeasePlanner.shardOrder(epoch: epoch, seed: seed, shardCount: shardSamples.count) {
            let n = shardSamples[s]
            let lo = max(from, p), hi = min(to, p + n)
            if lo < hi { out.append(SampleRange(epoch: epoch, shard: s, start: lo - p, end: hi - p)) }
            p += n
            if p >= to { break }
        }
        return out
    }

    /// Stream boundaries of an epoch: the recorded ones, else equal shares for `worldSize`.
    public func streamBoundaries(epoch: Int) -> [Int] {
        if let b = boundaries[epoch] { return b }
        let n = streamLength
        return (0...worldSize).map { $0 * n }
    }

    /// The epoch's tail: plan positions past the last stream, dropped when the epoch closes.
    public func tail(epoch: Int) -> [SampleRange] {
        ranges(epoch: epoch, from: streamBoundaries(epoch: epoch).last!, to: samplesPerEpoch)
    }

    /// The next range to lease to `rank`, or nil when its streams are exhausted.
    public mutating func next(rank: Int) -> SampleRange? {
        guard rank >= 0, rank < worldSize else { return nil }
        while true {
            if var r = queues[rank].first {
                if r.count > leaseSize {
                    queues[rank][0].start += leaseSize
                    r.end = r.start + leaseSize
                } else {
                    queues[rank].removeFirst()
                }
                issued[r.epoch, default: 0] += r.count
                return r
            }
            guard rankEpoch[rank] + 1 < epochs else { return nil }
            start(epoch: rankEpoch[rank] + 1, rank: rank)
        }
    }

    /// Puts `rank`'s stream of `epoch` into its queue.
    private mutating func start(epoch: Int, rank: Int) {
        let b = streamBoundaries(epoch: epoch)
        if boundaries[epoch] == nil { boundaries[epoch] = b }
        rankEpoch[rank] = epoch
        queues[rank] += ranges(epoch: epoch, from: b[rank], to: b[rank + 1])
    }

    /// The rank whose stream of `epoch` holds plan position `p` (nil: the tail).
    func owner(epoch: Int, position p: Int) -> Int? {
        let b = streamBoundaries(epoch: epoch)
        guard p >= b[0], p < b[b.count - 1] else { return nil }
        var lo = 0, hi = b.count - 2
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if b[mid] <= p { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    /// Gives ranges back: each piece returns to the queue of the rank whose stream holds it, in
    /// plan order (pieces of the tail are not in any stream and stay out).
    public mutating func requeue(_ ranges: [SampleRange]) {
        var starts: [Int: [Int]] = [:]
        var touched = Set<Int>()
        for r in ranges where r.count > 0 {
            let st = starts[r.epoch] ?? shardStarts(epoch: r.epoch)
            starts[r.epoch] = st
            let b = streamBoundaries(epoch: r.epoch)
            var p = st[r.shard] + r.start
            let end = st[r.shard] + r.end
            while p < end {
                guard let o = owner(epoch: r.epoch, position: p) else {
                    // In the tail (or before the first stream): nobody's; skip to the next boundary.
                    p = b.first { $0 > p }.map { min($0, end) } ?? end
                    continue
                }
                let q = min(end, b[o + 1])
                queues[o].append(SampleRange(epoch: r.epoch, shard: r.shard, start: p - st[r.shard], end: q - st[r.shard]))
                issued[r.epoch, default: 0] -= q - p
                touched.insert(o)
                p = q
            }
        }
        for o in touched { queues[o] = sortedByPlan(queues[o], starts: &starts) }
    }

    /// Ranges sorted by (epoch, plan position), adjacent ones merged.
    private func sortedByPlan(_ rs: [SampleRange], starts: inout [Int: [Int]]) -> [SampleRange] {
        var keyed: [(Int, Int, SampleRange)] = []
        for r in rs {
            let st = starts[r.epoch] ?? shardStarts(epoch: r.epoch)
            starts[r.epoch] = st
            keyed.append((r.epoch, st[r.shard] + r.start, r))
        }
        keyed.sort { ($0.0, $0.1) < ($1.0, $1.1) }
        var out: [SampleRange] = []
        for (_, _, r) in keyed {
            if var last = out.last, last.epoch == r.epoch, last.shard == r.shard, last.end == r.start {
                last.end = r.end
                out[out.count - 1] = last
            } else {
                out.append(r)
            }
        }
        return out
    }

    /// Closes the epochs before `epochsDone`: takes everything of them still unleased out of the
    /// queues (ranks that never started one have their whole stream taken) and returns it, with
    /// the tails of the epochs in [`alreadyDone`, `epochsDone`), as the samples dropped.
    public mutating func close(epochsBefore epochsDone: Int, alreadyDone: Int) -> [SampleRange] {
        var dropped: [SampleRange] = []
        for r in 0..<worldSize {
            while rankEpoch[r] < epochsDone - 1 { start(epoch: rankEpoch[r] + 1, rank: r) }
            let taken = queues[r].filter { $0.epoch < epochsDone }
            // Counted like leased samples: a rollback of this close gives them back via
            // `requeue`, which subtracts them again (without this, `issued` went negative).
            for piece in taken { issued[piece.epoch, default: 0] += piece.count }
            dropped += taken
            queues[r].removeAll { $0.epoch < epochsDone }
        }
        for e in max(0, alreadyDone)..<min(epochsDone, epochs) { dropped += tail(epoch: e) }
        return SampleRange.merged(dropped)
    }

    /// Re-deals what is left of every started epoch over `newSize` ranks (equal contiguous pieces
    /// of the remaining plan positions, the first ones one longer when it does not divide);
    /// epochs not started yet are planned for `newSize`.
    public mutating func changeWorldSize(to newSize: Int) {
        precondition(newSize > 0, "LeasePlanner: worldSize must be > 0")
        guard newSize != worldSize else { return }
        let last = rankEpoch.max() ?? -1
        for r in 0..<worldSize { while rankEpoch[r] < last { start(epoch: rankEpoch[r] + 1, rank: r) } }
        var starts: [Int: [Int]] = [:]
        let remaining = sortedByPlan(queues.flatMap { $0 }, starts: &starts)
        var newQueues = Array(repeating: [SampleRange](), count: newSize)
        if last >= 0 {
            for e in 0...last {
                let st = starts[e] ?? shardStarts(epoch: e)
                let mine = remaining.filter { $0.epoch == e }
                let total = SampleRange.total(mine)
                var bounds: [Int] = []
                var rank = 0, taken = 0
                var share = total / newSize + (0 < total % newSize ? 1 : 0)
                for var r in mine {
                    while r.count > 0 {
                        if taken == share && rank < newSize - 1 {
                            rank += 1
                            taken = 0
                            share = total / newSize + (rank < total % newSize ? 1 : 0)
                        }
                        if bounds.count <= rank { bounds.append(st[r.shard] + r.start) }
                        let n = min(r.count, share - taken)
                        let piece = SampleRange(epoch: e, shard: r.shard, start: r.start, end: r.start + n)
                        newQueues[rank].append(piece)
                        taken += n
                        r.start += n
                        if n == 0 { break }
                    }
                }
                let tailStart = streamBoundaries(epoch: e).last!
                while bounds.count < newSize { bounds.append(bounds.last ?? tailStart) }
                // Positions before the first remaining one (already trained) count as rank 0's.
                bounds[0] = 0
                boundaries[e] = bounds + [tailStart]
            }
        }
        worldSize = newSize
        rankEpoch = Array(repeating: last, count: newSize)
        queues = newQueues
    }
}
