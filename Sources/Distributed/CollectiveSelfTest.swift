/// Checks the collectives of `comm` with values every rank can predict; returns failure texts
/// (empty when all is well). Used by `albef-worker mpi-selftest` under real mpirun and by tests.
public func collectiveSelfTest(_ comm: Communicator) -> [String] {
    var failures: [String] = []
    let r = comm.rank, w = comm.size
    // allreduce: rank r contributes (r+1)·(i+1) + 0.5 on 1001 floats (odd size).
    let n = 1001
    var a = (0..<n).map { Float((r + 1) * ($0 + 1)) + 0.5 }
    a.withUnsafeMutableBufferPointer { comm.allReduceSum($0.baseAddress!, count: n) }
    let tri = Float(w * (w + 1) / 2)
    for i in 0..<n where a[i] != tri * Float(i + 1) + 0.5 * Float(w) {
        failures.append("rank \(r): allreduce[\(i)] = \(a[i]), expected \(tri * Float(i + 1) + 0.5 * Float(w))")
        break
    }
    // non-blocking allreduce.
    var b = [Float](repeating: Float(r), count: 37)
    b.withUnsafeMutableBufferPointer { p in comm.startAllReduceSum(p.baseAddress!, count: 37).wait() }
    if b.contains(where: { $0 != Float(w * (w - 1) / 2) }) { failures.append("rank \(r): iallreduce gave \(b[0])") }
    // allgather: rank r sends [r, r+0.25, r+0.5].
    let send: [Float] = [Float(r), Float(r) + 0.25, Float(r) + 0.5]
    var recv = [Float](repeating: -1, count: 3 * w)
    send.withUnsafeBufferPointer { s in recv.withUnsafeMutableBufferPointer { comm.allGather(s.baseAddress!, count: 3, into: $0.baseAddress!) } }
    for q in 0..<w where recv[(3 * q)..<(3 * q + 3)] != [Float(q), Float(q) + 0.25, Float(q) + 0.5] {
        failures.append("rank \(r): allgather slot \(q) = \(Array(recv[(3 * q)..<(3 * q + 3)]))")
    }
    // broadcast from the last rank.
    var c: [Float] = r == w - 1 ? [3.5, -1, 7] : [0, 0, 0]
    comm.broadcast(&c, root: w - 1)
    if c != [3.5, -1, 7] { failures.append("rank \(r): broadcast gave \(c)") }
    let words = comm.allGather(UInt64(100 + r))
    if words != (0..<w).map({ UInt64(100 + $0) }) { failures.append("rank \(r): allGather(UInt64) gave \(words)") }
    var d: [Double] = [Double(r) + 0.125]
    d.withUnsafeMutableBufferPointer { comm.allReduceSum($0.baseAddress!, count: 1) }
    if d[0] != Double(w * (w - 1) / 2) + 0.125 * Double(w) { failures.append("rank \(r): allreduce(double) gave \(d[0])") }
    comm.barrier()
    return failures
}
