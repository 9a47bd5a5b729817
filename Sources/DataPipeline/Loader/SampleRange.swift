/// A contiguous run of samples of one shard: indices [start, end) in file order (a coordinator lease).
///
/// `epoch`, when set (a coordinator lease belongs to an epoch), replaces the loader's epoch in the
/// per-sample random stream, so a lease stream may cross epochs.
public struct SampleRange: Codable, Hashable, Sendable, CustomStringConvertible {
    public var shard: Int
    public var start: Int
    public var end: Int
    public var epoch: Int?
    public init(shard: Int, start: Int, end: Int, epoch: Int? = nil) {
        precondition(start <= end, "SampleRange: start \(start) > end \(end)")
        self.shard = shard
        self.start = start
        self.end = end
        self.epoch = epoch
    }
    public var count: Int { end - start }
    public var description: String { "shard \(shard) [\(start), \(end))" }
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

/// An external supplier of sample ranges, e.g. the coordinator's lease client.
///
/// `nextRange()` is called from a loader worker thread (under the loader's lock) whenever the
/// loader needs more work; it may block. Returning nil ends the stream: the loader finishes the
/// samples it has and then `next()` returns nil. Implementations should prefetch leases so this
/// call is usually immediate.
public protocol SampleRangeSource: AnyObject, Sendable {
    func nextRange() throws -> SampleRange?
}

/// A fixed list of ranges (tests, single-process runs).
public final class FixedRangeSource: SampleRangeSource, @unchecked Sendable {
    private let queue: Locked<[SampleRange]>
    public init(_ ranges: [SampleRange]) { queue = Locked(ranges.reversed()) }
    public func nextRange() throws -> SampleRange? { queue.with { $0.popLast() } }
}
