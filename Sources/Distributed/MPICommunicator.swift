import CMPI
import Foundation

/// Owns MPI initialisation: `MPI_Init_thread` in `init`, `MPI_Finalize` in `deinit`. Create
/// exactly one per process, in the executable.
///
/// Asks for `MPI_THREAD_SERIALIZED`: the gradient ``ReductionThread`` makes MPI calls from a
/// second thread, never at the same time as the training thread (see its contract).
public final class MPIEnvironment {
    public let rank: Int
    public let size: Int
    /// Whether MPI calls may come from another thread than the first (provided ≥ serialized).
    public let threadsSerialized: Bool

    public init() throws {
        var provided: Int32 = 0
        var argc: Int32 = 0
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        try mpiCheck(MPI_Init_thread(&argc, &argv, CMPI_THREAD_SERIALIZED(), &provided), "MPI_Init_thread")
        threadsSerialized = provided >= CMPI_THREAD_SERIALIZED()
        var r: Int32 = 0, s: Int32 = 0
        try mpiCheck(MPI_Comm_rank(CMPI_COMM_WORLD(), &r), "MPI_Comm_rank")
        try mpiCheck(MPI_Comm_size(CMPI_COMM_WORLD(), &s), "MPI_Comm_size")
        rank = Int(r)
        size = Int(s)
    }

    /// Whether the process was started by an MPI launcher (mpirun / srun) with more than one rank
    /// possible; reads the launchers' environment variables without initialising MPI.
    public static var launchedByMPI: Bool {
        let env = Foundation.ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_RANK"] != nil
    }

    /// Aborts every rank of the job with `code` (used when one rank cannot continue).
    public func abort(_ code: Int32) -> Never {
        MPI_Abort(CMPI_COMM_WORLD(), code)
        exit(code)
    }

    /// Ends this rank cleanly with `code`: `MPI_Finalize` (every rank must reach it, as after an
    /// agreed failure), then `exit`. Unlike `abort`, the launcher forwards all output first.
    public func finalizeAndExit(_ code: Int32) -> Never {
        fflush(stdout)
        fflush(stderr)
        MPI_Finalize()
        exit(code)
    }

    deinit { MPI_Finalize() }
}

/// `Communicator` over `MPI_COMM_WORLD`.
public final class MPICommunicator: Communicator {
    public let environment: MPIEnvironment
    public var rank: Int { environment.rank }
    public var size: Int { environment.size }

    public init(_ env: MPIEnvironment) { environment = env }

    /// The ranks grouped by host, for the two-level reduction (nil: one flat allreduce).
    public struct HostGroups {
        /// The ranks of this rank's host (`MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)`).
        let host: MPI_Comm?
        /// The ranks with this rank's index within their host, one per host.
        let cross: MPI_Comm?
        public let hostRank: Int, hostSize: Int
        /// The number of hosts.
        public let hosts: Int
    }
    public private(set) var hostGroups: HostGroups?

    /// Switches the float and bf16 sums to the two-level reduction (Horovod / NCCL's
    /// hierarchical allreduce): a reduce-scatter within each host over shared memory leaves each
    /// of the host's R ranks the host's sum of one 1/R chunk; each chunk is summed across hosts
    /// by the ranks holding it (`MPI_Allreduce` on R communicators of one rank per host, all at
    /// once, each host link carrying R chunks of 1/R); an allgather within the host assembles the
    /// whole. Every rank ends with the same bits; the summation order differs from the flat
    /// allreduce's, so results differ from it in the last bits (fixed for a given placement).
    /// Collective: every rank calls it. With one host, one rank per host or hosts with different
    /// numbers of ranks it keeps the flat allreduce and returns nil.
    @discardableResult
    public func useHostGroups() -> HostGroups? {
        guard size > 1 else { return nil }
        var host: MPI_Comm? = CMPI_COMM_NULL()
        mpiMust(MPI_Comm_split_type(CMPI_COMM_WORLD(), CMPI_COMM_TYPE_SHARED(), Int32(rank), CMPI_INFO_NULL(), &host), "MPI_Comm_split_type")
        var hr: Int32 = 0, hs: Int32 = 0
        mpiMust(MPI_Comm_rank(host, &hr), "MPI_Comm_rank")
        mpiMust(MPI_Comm_size(host, &hs), "MPI_Comm_size")
        // [hosts, min ranks per host, max ranks per host] over the world.
        var stats: [Int32] = [hr == 0 ? 1 : 0, -hs, hs]
        mpiMust(MPI_Allreduce(CMPI_IN_PLACE(), &stats, 1, CMPI_INT32(), CMPI_SUM(), CMPI_COMM_WORLD()), "MPI_Allreduce")
        stats.withUnsafeMutableBufferPointer {
            mpiMust(MPI_Allreduce(CMPI_IN_PLACE(), $0.baseAddress! + 1, 2, CMPI_INT32(), CMPI_MAX(), CMPI_COMM_WORLD()), "MPI_Allreduce")
        }
        let hosts = Int(stats[0])
        guard hosts > 1, hosts < size, -stats[1] == stats[2] else {
            MPI_Comm_free(&host)
            return nil
        }
        var cross: MPI_Comm? = CMPI_COMM_NULL()
        mpiMust(MPI_Comm_split(CMPI_COMM_WORLD(), hr, Int32(rank), &cross), "MPI_Comm_split")
        let g = HostGroups(host: host, cross: cross, hostRank: Int(hr), hostSize: Int(hs), hosts: hosts)
        hostGroups = g
        return g
    }

    /// The in-place sum of `count` values of `type` (`width` bytes each) under `op`, flat or by
    /// host groups.
    private func sum(_ buffer: UnsafeMutableRawPointer, count: Int, width: Int, type: MPI_Datatype?, op: MPI_Op?, _ what: String) {
        guard let g = hostGroups, count >= g.hostSize else {
            mpiMust(MPI_Allreduce(CMPI_IN_PLACE(), buffer, Int32(count), type, op, CMPI_COMM_WORLD()), what)
            return
        }
        let r = g.hostSize, me = g.hostRank
        let counts = (0..<r).map { Int32(count / r + ($0 < count % r ? 1 : 0)) }
        var displs = [Int32](repeating: 0, count: r)
        for i in 1..<r { displs[i] = displs[i - 1] + counts[i - 1] }
        // Within the host: this rank's chunk of the host's sum, left at the start of the buffer.
        mpiMust(MPI_Reduce_scatter(CMPI_IN_PLACE(), buffer, counts, type, op, g.host), what + " (reduce-scatter in the host)")
        let mine = buffer + Int(displs[me]) * width
        if displs[me] > 0 { memmove(mine, buffer, Int(counts[me]) * width) }
        // Across hosts: the chunk summed by the ranks that hold it, one per host.
        mpiMust(MPI_Allreduce(CMPI_IN_PLACE(), mine, counts[me], type, op, g.cross), what + " (across hosts)")
        // Within the host: every chunk to every rank.
        mpiMust(MPI_Allgatherv(CMPI_IN_PLACE(), 0, type, buffer, counts, displs, type, g.host), what + " (allgather in the host)")
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1, count > 0 else { return }
        sum(buffer, count: count, width: 4, type: CMPI_FLOAT(), op: CMPI_SUM(), "MPI_Allreduce")
    }

    public func allReduceSumBF16Bits(_ buffer: UnsafeMutablePointer<UInt16>, count: Int) {
        guard size > 1, count > 0 else { return }
        sum(buffer, count: count, width: 2, type: CMPI_UINT16(), op: CMPI_BF16_SUM(), "MPI_Allreduce (bf16)")
    }

    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) -> CollectiveRequest {
        guard size > 1, count > 0 else { return CompletedRequest() }
        let r = MPIRequest()
        mpiMust(MPI_Iallreduce(CMPI_IN_PLACE(), buffer, Int32(count), CMPI_FLOAT(), CMPI_SUM(), CMPI_COMM_WORLD(), &r.request), "MPI_Iallreduce")
        return r
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {
        guard size > 1, count > 0 else { return }
        mpiMust(MPI_Allreduce(CMPI_IN_PLACE(), buffer, Int32(count), CMPI_DOUBLE(), CMPI_SUM(), CMPI_COMM_WORLD()), "MPI_Allreduce")
    }

    public func allGather(_ input: UnsafePointer<Float>, count: Int, into output: UnsafeMutablePointer<Float>) {
        mpiMust(MPI_Allgather(input, Int32(count), CMPI_FLOAT(), output, Int32(count), CMPI_FLOAT(), CMPI_COMM_WORLD()), "MPI_Allgather")
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) {
        guard size > 1, count > 0 else { return }
        var off = 0
        while off < count {  // MPI counts are Int32
            let n = min(count - off, 1 << 30)
            mpiMust(MPI_Bcast(buffer + off, Int32(n), CMPI_FLOAT(), Int32(root), CMPI_COMM_WORLD()), "MPI_Bcast")
            off += n
        }
    }

    public func broadcast(bytes: UnsafeMutableRawPointer, count: Int, root: Int) {
        guard size > 1, count > 0 else { return }
        mpiMust(MPI_Bcast(bytes, Int32(count), CMPI_BYTE(), Int32(root), CMPI_COMM_WORLD()), "MPI_Bcast")
    }

    public func allGather(_ value: UInt64) -> [UInt64] {
        var v = value
        var out = [UInt64](repeating: 0, count: size)
        mpiMust(MPI_Allgather(&v, 1, CMPI_UINT64(), &out, 1, CMPI_UINT64(), CMPI_COMM_WORLD()), "MPI_Allgather")
        return out
    }

    public func barrier() { mpiMust(MPI_Barrier(CMPI_COMM_WORLD()), "MPI_Barrier") }
}

/// An `MPI_Request` owned by a class; `wait` completes it (idempotent).
final class MPIRequest: CollectiveRequest {
    var request: MPI_Request? = CMPI_REQUEST_NULL()
    var done = false
    func wait() {
        guard !done else { return }
        mpiMust(MPI_Wait(&request, CMPI_STATUS_IGNORE()), "MPI_Wait")
        done = true
    }
    deinit { wait() }
}
