import Corpus

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
