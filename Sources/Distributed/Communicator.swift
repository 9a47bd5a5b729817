/// Collective operations between the data-parallel ranks (the data plane).
///
/// Two implementations: `MPICommunicator` (Open MPI, one rank per process) and
/// `LocalCommunicator` (threads in one process, for tests). All reductions combine ranks in a
/// fixed order so results do not depend on timing.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// In-place sum over ranks of `count` floats.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    /// Starts an in-place sum; `wait` on the returned request before reading the buffer.
    func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) -> CollectiveRequest
    /// In-place sum of bf16 bit patterns, each pairwise sum rounded to bf16 (``BF16``).
    func allReduceSumBF16Bits(_ buffer: UnsafeMutablePointer<UInt16>, count: Int)
    /// In-place sum of doubles (metrics).
    func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int)
    /// Gathers `count` floats from every rank into `output` (`size·count`), in rank order.
    func allGather(_ input: UnsafePointer<Float>, count: Int, into output: UnsafeMutablePointer<Float>)
    /// Copies `root`'s `count` floats to every rank.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int)
    /// Copies `root`'s bytes to every rank.
    func broadcast(bytes: UnsafeMutableRawPointer, count: Int, root: Int)
    /// Gathers one UInt64 from every rank (checksums), in rank order.
    func allGather(_ value: UInt64) -> [UInt64]
    /// Waits for every rank.
    func barrier()
}

/// A pending non-blocking collective.
public protocol CollectiveRequest: AnyObject {
    func wait()
}

/// A request that was already complete when returned.
public final class CompletedRequest: CollectiveRequest {
    public init() {}
    public func wait() {}
}

extension Communicator {
    /// Broadcasts an array of floats from `root` in place.
    public func broadcast(_ values: inout [Float], root: Int) {
        let n = values.count
        values.withUnsafeMutableBufferPointer { broadcast($0.baseAddress!, count: n, root: root) }
    }
}
