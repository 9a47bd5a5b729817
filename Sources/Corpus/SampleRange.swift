/// Samples `[start, end)` of one shard (file order) in one epoch's plan: a coordinator lease, a
/// piece of the ledger, a piece of a loader's sequence. The one definition both the control plane
/// and the data pipeline use; `epoch` selects the per-sample random stream (crop, flip, caption
/// choice), so the same sample is augmented differently in each epoch.
public struct SampleRange: Codable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var epoch: Int
    public var shard: Int
    public var start: Int
    public var end: Int
    public init(epoch: Int = 0, shard: Int, start: Int, end: Int) {
        precondition(start <= end, "SampleRange: start \(start) > end \(end)")
        self.epoch = epoch
        self.shard = shard
        self.start = start
        self.end = end
    }
    public var count: Int { end - start }
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

    /// Total samples of `ranges`.
    public static func total(_ ranges: [SampleRange]) -> Int { ranges.reduce(0) { $0 + $1.count } }
}

/// One sample's address.
public struct SampleRef: Codable, Hashable, Sendable {
    public var shard: Int
    public var index: Int
    public init(shard: Int, index: Int) {
        self.shard = shard
        self.index = index
    }
}
