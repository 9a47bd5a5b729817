import CMPI
import Foundation

/// Owns MPI initialisation: `MPI_Init_thread` (funneled) in `init`, `MPI_Finalize` in `deinit`.
/// Create exactly one per process, in the executable.
public final class MPIEnvironment {
    public let rank: Int
    public let size: Int

    public init() throws {
        var provided: Int32 = 0
        var argc: Int32 = 0
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        try mpiCheck(MPI_Init_thread(&argc, &argv, CMPI_THREAD_FUNNELED(), &provided), "MPI_Init_thread")
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

    deinit { MPI_Finalize() }
}

/// `Communicator` over `MPI_COMM_WORLD`.
public final class MPICommunicator: Communicator {
    public let environment: MPIEnvironment
    public var rank: Int { environment.rank }
    public var size: Int { environment.size }

    public init(_ env: MPIEnvironment) { environment = env }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard size > 1, count > 0 else { return }
        mpiMust(MPI_Allreduce(CMPI_IN_PLACE(), buffer, Int32(count), CMPI_FLOAT(), CMPI_SUM(), CMPI_COMM_WORLD()), "MPI_Allreduce")
    }

    public func allReduceSumBF16Bits(_ buffer: UnsafeMutablePointer<UInt16>, count: Int) {
        guard size > 1, count > 0 else { return }
        mpiMust(MPI_Allreduce(CMPI_IN_PLACE(), buffer, Int32(count), CMPI_UINT16(), CMPI_BF16_SUM(), CMPI_COMM_WORLD()), "MPI_Allreduce (bf16)")
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
