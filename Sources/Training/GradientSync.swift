import Distributed
import Foundation
import NN
import Tensor

/// Averages gradients across ranks in buckets that start reducing during backward.
///
/// Before backward, `prepare` counts for each packed parameter how many tape nodes consume it;
/// after each node runs, those counts drop, and a parameter whose count reaches zero has its
/// final gradient. When every parameter of a bucket is final, the bucket's reduction starts
/// (llm.c / PyTorch DDP): by default a blocking allreduce on the training thread, which backward
/// waits for; with `overlap` (`grad_overlap: thread`) it is handed to a ``ReductionThread`` and
/// backward goes on. `finish` waits for all buckets, starts any bucket whose parameters were
/// never used, and scales by 1/world size.
///
/// Optimizer-in-backward: when the parameters use the `.deferred` gradient layout, a bucket's
/// gradient buffer is bound when backward first touches one of its parameters; when the bucket
/// is final it is reduced, scaled, applied by `optimizer` (AdamW on those segments) and released.
/// Only unfinished buckets hold gradient memory, instead of a whole flat gradient buffer; the
/// arithmetic per element is that of the flat path (same buckets, same sums, same AdamW).
public final class GradientSync {
    public let comm: Communicator
    public let params: FlatParameters
    public let bucketer: GradientBucketer
    let segmentOf: [ObjectIdentifier: Int]
    var consumers: [Int] = []
    var pendingInBucket: [Int] = []
    var requests: [CollectiveRequest?] = []
    /// Time spent waiting for communication at the end of backward (seconds), last step.
    public private(set) var waitSeconds: Double = 0
    /// Whether communication is performed (off: for measuring the step without it).
    public var enabled = true
    /// Use MPI_Iallreduce per bucket (true) or a blocking MPI_Allreduce as each bucket becomes
    /// ready (false, the default: Open MPI's blocking collectives use its tuned algorithms and
    /// measured ~2× faster here than libnbc's non-blocking ones, which also only progress inside
    /// MPI calls, so they did not overlap with computation anyway).
    public var nonBlocking = ProcessInfo.processInfo.environment["ALBEF_NONBLOCKING_ALLREDUCE"] == "1"
    /// The optimizer applied bucket by bucket (`.deferred` layout only; `beginStep` is the caller's).
    public var optimizer: AdamW?
    /// Seconds spent in bucket optimizer updates during the last backward (deferred layout).
    public private(set) var optimizerSeconds: Double = 0
    var fused: Bool { params.gradientLayout == .deferred }
    /// The reduced gradients are divided by this: the number of micro-batches they sum (world
    /// size × accumulation micro-steps; nil: the world size).
    public var divisor: Int?
    /// Reduce the buckets in bf16 (``BF16``: half the bytes; always blocking), config
    /// `grad_reduce: bf16`; false: float32.
    public var reduceInBF16 = false
    /// One bucket's in-place sum across ranks, in the configured precision.
    func reduce(_ p: UnsafeMutablePointer<Float>, count: Int) {
        if reduceInBF16 { comm.allReduceSumBF16(p, count: count) } else { comm.allReduceSum(p, count: count) }
    }
    var scale: Float { 1 / Float(divisor ?? comm.size) }
    /// The thread that reduces buckets while backward goes on (config `grad_overlap: thread`);
    /// nil: each bucket's allreduce runs on the training thread as the bucket becomes final
    /// (backward waits for it). Same collectives in the same order either way: same bits.
    public var overlap: ReductionThread?
    /// Buckets handed to `overlap` whose results are not applied yet (deferred layout), in
    /// submission order, with their tickets.
    var inFlight: [(bucket: Int, ticket: Int)] = []
    var inFlightHead = 0
    var bucketBuffers: [Storage?] = []
    let segmentsOfBucket: [Range<Int>]

    public init(comm: Communicator, params: FlatParameters, bucketBytes: Int = 16 << 20) {
        self.comm = comm
        self.params = params
        bucketer = GradientBucketer(segments: params.segments.map { ($0.offset, $0.count) }, targetElements: bucketBytes / 4)
        var m: [ObjectIdentifier: Int] = [:]
        for (i, t) in params.tensors.enumerated() { m[ObjectIdentifier(t)] = i }
        segmentOf = m
        var ranges = [Range<Int>?](repeating: nil, count: bucketer.buckets.count)
        for (si, b) in bucketer.bucketOfSegment.enumerated() {
            ranges[b] = ranges[b].map { min($0.lowerBound, si)..<max($0.upperBound, si + 1) } ?? si..<(si + 1)
        }
        segmentsOfBucket = ranges.map { $0 ?? 0..<0 }
        bucketBuffers = Array(repeating: nil, count: bucketer.buckets.count)
        if params.gradientLayout == .deferred {
            for (i, t) in params.tensors.enumerated() {
                let b = bucketer.bucketOfSegment[i]
                t.gradientBinder = { [weak self] _ in self?.bind(b) }
            }
        }
    }

    /// Binds bucket `b`'s zeroed gradient buffer to its parameters (deferred layout).
    func bind(_ b: Int) {
        guard bucketBuffers[b] == nil else { return }
        let r = bucketer.buckets[b]
        let buf = Storage(count: r.count)
        bucketBuffers[b] = buf
        for si in segmentsOfBucket[b] {
            let s = params.segments[si]
            params.tensors[si].gradStorage = Storage(borrowing: buf.pointer + (s.offset - r.lowerBound), count: s.count, owner: buf)
        }
    }

    /// Reduces, applies and releases bucket `b` (deferred layout); with `overlap`, hands the
    /// reduction to the thread and applies when it is done (`applyFinished`).
    func complete(_ b: Int) {
        if bucketBuffers[b] == nil { bind(b) }  // untouched: zero gradients, as in the flat layout
        let buf = bucketBuffers[b]!, n = bucketer.buckets[b].count
        if enabled && comm.size > 1 {
            if let overlap {
                let ticket = overlap.submit { [self] in reduce(buf.pointer, count: n) }
                inFlight.append((b, ticket))
                requests[b] = CompletedRequest()
                return
            }
            reduce(buf.pointer, count: n)
        }
        apply(b)
    }

    /// Applies the reduced buckets the thread has finished, in submission order (deferred layout;
    /// `all`: waits for every one).
    func applyFinished(all: Bool) {
        guard let overlap, inFlightHead < inFlight.count else { return }
        if all { overlap.waitAll() }
        let done = overlap.completedCount
        while inFlightHead < inFlight.count && inFlight[inFlightHead].ticket < done {
            apply(inFlight[inFlightHead].bucket)
            inFlightHead += 1
        }
    }

    /// Scales, applies (AdamW on its segments) and releases reduced bucket `b` (deferred layout).
    func apply(_ b: Int) {
        let buf = bucketBuffers[b]!, r = bucketer.buckets[b]
        if scale != 1 { sscal(r.count, alpha: scale, x: buf.pointer) }
        let t0 = monotonicSeconds()
        guard let optimizer else { preconditionFailure("GradientSync: deferred gradients need an optimizer") }
        optimizer.update(segments: segmentsOfBucket[b], gradientBase: buf.pointer - r.lowerBound)
        optimizerSeconds += monotonicSeconds() - t0
        for si in segmentsOfBucket[b] { params.tensors[si].gradStorage = nil }
        bucketBuffers[b] = nil
        requests[b] = CompletedRequest()
    }

    /// Hook for `Tensor.backward(prepare:)`.
    public func prepare(_ order: [Tensor]) {
        consumers = [Int](repeating: 0, count: params.segments.count)
        for node in order { for p in node.inputs { if let s = segmentOf[ObjectIdentifier(p)] { consumers[s] += 1 } } }
        pendingInBucket = bucketer.segmentsPerBucket
        requests = Array(repeating: nil, count: bucketer.buckets.count)
        optimizerSeconds = 0
        inFlight = []
        inFlightHead = 0
        // Parameters no node consumes are final from the start.
        for s in 0..<consumers.count where consumers[s] == 0 { segmentFinal(s) }
    }

    /// Hook for `Tensor.backward(afterNode:)`.
    public func afterNode(_ node: Tensor) {
        if inFlightHead < inFlight.count { applyFinished(all: false) }
        for p in node.inputs {
            guard let s = segmentOf[ObjectIdentifier(p)] else { continue }
            consumers[s] -= 1
            if consumers[s] == 0 { segmentFinal(s) }
        }
    }

    func segmentFinal(_ s: Int) {
        let b = bucketer.bucketOfSegment[s]
        pendingInBucket[b] -= 1
        if pendingInBucket[b] == 0 { start(b) }
    }

    func start(_ b: Int) {
        if fused { if requests[b] == nil { complete(b) }; return }
        guard enabled, comm.size > 1, requests[b] == nil, let g = params.gradients else { return }
        let r = bucketer.buckets[b]
        if let overlap {
            let p = g.pointer + r.lowerBound, n = r.count
            requests[b] = ThreadRequest(overlap, ticket: overlap.submit { [self] in reduce(p, count: n) })
        } else if nonBlocking && !reduceInBF16 {
            requests[b] = comm.startAllReduceSum(g.pointer + r.lowerBound, count: r.count)
        } else {
            reduce(g.pointer + r.lowerBound, count: r.count)
            requests[b] = CompletedRequest()
        }
    }

    /// Completes every bucket and divides by the world size.
    public func finish() {
        let t0 = monotonicSeconds()
        if fused {
            if requests.count != bucketer.buckets.count {  // backward ran without the hooks
                requests = Array(repeating: nil, count: bucketer.buckets.count)
                optimizerSeconds = 0
            }
            for b in 0..<bucketer.buckets.count where requests[b] == nil { complete(b) }
            applyFinished(all: true)
            requests = []
            waitSeconds = monotonicSeconds() - t0
            return
        }
        guard let g = params.gradients else { waitSeconds = 0; return }
        guard enabled, comm.size > 1 else {
            if scale != 1 { sscal(params.count, alpha: scale, x: g.pointer) }
            waitSeconds = monotonicSeconds() - t0
            return
        }
        for b in 0..<bucketer.buckets.count where requests.indices.contains(b) && requests[b] == nil { start(b) }
        if requests.count != bucketer.buckets.count {  // backward ran without the hooks
            overlap?.waitAll()
            for r in bucketer.buckets { reduce(g.pointer + r.lowerBound, count: r.count) }
        }
        for r in requests { r?.wait() }
        overlap?.waitAll()
        requests = []
        sscal(params.count, alpha: scale, x: g.pointer)
        waitSeconds = monotonicSeconds() - t0
    }
}

/// A bucket handed to a ``ReductionThread``.
final class ThreadRequest: CollectiveRequest {
    let thread: ReductionThread
    let ticket: Int
    init(_ thread: ReductionThread, ticket: Int) {
        self.thread = thread
        self.ticket = ticket
    }
    func wait() { thread.wait(upTo: ticket) }
}

#if canImport(Glibc)
import Glibc
#endif

extension GradientSync {
    /// Reduces the whole gradient buffer the way a step does (every bucket's non-blocking
    /// allreduce started, then all awaited) and returns the seconds it took (benchmarks).
    public func timeBucketedAllReduce() -> Double {
        let scratch = params.gradients ?? Storage(count: params.count)
        let g = scratch
        comm.barrier()
        let t0 = monotonicSeconds()
        if let overlap {
            for b in bucketer.buckets {
                let p = g.pointer + b.lowerBound, n = b.count
                overlap.submit { [self] in reduce(p, count: n) }
            }
            overlap.waitAll()
        } else if nonBlocking && !reduceInBF16 {
            let reqs = bucketer.buckets.map { comm.startAllReduceSum(g.pointer + $0.lowerBound, count: $0.count) }
            for r in reqs { r.wait() }
        } else {
            for b in bucketer.buckets { reduce(g.pointer + b.lowerBound, count: b.count) }
        }
        return monotonicSeconds() - t0
    }

    /// One blocking allreduce of the same bytes (the raw baseline).
    public func timeRawAllReduce() -> Double {
        let g = params.gradients ?? Storage(count: params.count)
        comm.barrier()
        let t0 = monotonicSeconds()
        comm.allReduceSum(g.pointer, count: params.count)
        return monotonicSeconds() - t0
    }
}
