import Foundation
import Tensor

/// A thread that runs gradient reductions while the training thread goes on with backward.
///
/// With one BLAS thread per rank nothing progresses a non-blocking collective in the background
/// (Open MPI's `MPI_Iallreduce` only advances inside MPI calls), so a bucket's allreduce stalls
/// backward for its whole duration. This thread owns the communication during backward: the
/// training thread `submit`s each bucket as it becomes final and keeps computing; the thread
/// runs the buckets' blocking collectives (Open MPI's tuned algorithms) one after another, in
/// submission order; `wait(upTo:)` / `waitAll` block until they are done. PyTorch DDP's
/// counterpart is its communication stream / the NCCL progress thread; torch's CPU (gloo)
/// backend runs its allreduces on a worker thread the same way.
///
/// The contract that makes `MPI_THREAD_SERIALIZED` enough: while jobs are pending, the training
/// thread makes no MPI call of its own (it calls `waitAll` before the next collective). Every
/// rank submits the same buckets in the same order (the order backward finishes them, which the
/// model's graph fixes), so the collectives match across ranks; each job is the same call the
/// blocking path makes, so the sums are bit-identical to it.
public final class ReductionThread: @unchecked Sendable {
    /// The queue the thread serves (the thread holds it, so the owner can go away first).
    private final class Queue: @unchecked Sendable {
        let cond = NSCondition()
        var jobs: [() -> Void] = []
        var submitted = 0
        var completed = 0
        var stopping = false
        var busySeconds: Double = 0

        func serve() {
            while true {
                cond.lock()
                while jobs.isEmpty && !stopping { cond.wait() }
                if jobs.isEmpty {
                    cond.unlock()
                    return
                }
                let job = jobs.removeFirst()
                cond.unlock()
                let t0 = monotonicSeconds()
                job()
                let t1 = monotonicSeconds()
                cond.lock()
                completed += 1
                busySeconds += t1 - t0
                cond.broadcast()
                cond.unlock()
            }
        }
    }

    private let q = Queue()

    public init(name: String = "albef-reduce") {
        let queue = q
        let t = Thread { queue.serve() }
        t.name = name
        t.stackSize = 1 << 20
        t.start()
    }

    /// Queues `job`; returns its ticket (0, 1, 2, … in submission order).
    @discardableResult
    public func submit(_ job: @escaping () -> Void) -> Int {
        q.cond.lock()
        defer { q.cond.unlock() }
        q.jobs.append(job)
        q.submitted += 1
        q.cond.broadcast()
        return q.submitted - 1
    }

    /// The number of jobs finished so far (every ticket below it is done; never blocks).
    public var completedCount: Int {
        q.cond.lock()
        defer { q.cond.unlock() }
        return q.completed
    }

    /// Whether the job with `ticket` has finished (never blocks).
    public func isDone(_ ticket: Int) -> Bool { completedCount > ticket }

    /// Blocks until the job with `ticket` (and every earlier one) has finished.
    public func wait(upTo ticket: Int) {
        q.cond.lock()
        while q.completed <= ticket { q.cond.wait() }
        q.cond.unlock()
    }

    /// Blocks until every submitted job has finished.
    public func waitAll() {
        q.cond.lock()
        while q.completed < q.submitted { q.cond.wait() }
        q.cond.unlock()
    }

    /// Seconds the thread spent inside jobs since the last `resetBusy` (its communication time).
    public var busySeconds: Double {
        q.cond.lock()
        defer { q.cond.unlock() }
        return q.busySeconds
    }

    public func resetBusy() {
        q.cond.lock()
        q.busySeconds = 0
        q.cond.unlock()
    }

    /// Lets the thread finish the queued jobs and end.
    deinit {
        q.cond.lock()
        q.stopping = true
        q.cond.broadcast()
        q.cond.unlock()
    }
}
