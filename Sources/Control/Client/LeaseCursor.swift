/// One sample handed to a rank: sample `index` of shard `shard` (`shardPath`) in `epoch`.
public struct SampleRef: Hashable, Sendable {
    public var epoch: UInt32
    public var shard: UInt32
    public var shardPath: String
    public var index: UInt64
    public var leaseId: UInt64
}

/// Walks the samples of the leases a ``CoordinatorClient`` hands out, in order, finishing each
/// lease as it runs out, and always knows this rank's exact ``DataPosition`` for a checkpoint.
///
/// ```swift
/// let cursor = LeaseCursor(client: client)
/// let refs = cursor.take(batchSize)          // fewer (maybe none) if no lease has arrived yet
/// ...
/// let mine = cursor.position                 // gather over MPI; rank 0 commits them all
/// ```
/// After a restart from a checkpoint, the coordinator re-issues everything after the committed
/// positions, so a fresh cursor is all a resumed rank needs.
public final class LeaseCursor {
    public let client: CoordinatorClient
    /// The lease being read and how many of its samples were taken.
    public private(set) var current: Lease?
    public private(set) var offset: UInt64 = 0
    /// The last lease read to its end (the position points at its end between leases).
    private var finished: Lease?

    public init(client: CoordinatorClient) {
        self.client = client
    }

    /// Up to `n` next samples without waiting; the result is short when the local lease queue is
    /// empty (the client is already asking for more) or the data is exhausted.
    public func take(_ n: Int) -> [SampleRef] {
        var out: [SampleRef] = []
        out.reserveCapacity(n)
        while out.count < n {
            if current == nil {
                guard let next = client.nextLease() else { break }
                current = next
                offset = 0
            }
            guard let lease = current else { break }
            let k = min(UInt64(n - out.count), lease.count - offset)
            for i in 0..<k {
                out.append(SampleRef(epoch: lease.epoch, shard: lease.shard, shardPath: lease.shardPath,
                                     index: lease.start + offset + i, leaseId: lease.id))
            }
            offset += k
            if offset == lease.count {
                client.completeLease(lease)
                finished = lease
                current = nil
                offset = 0
            }
        }
        return out
    }

    /// True when every sample this rank will get has been taken (no current lease, nothing
    /// queued, and the coordinator has no more data in any epoch).
    public var isExhausted: Bool { current == nil && client.isExhausted }

    /// This rank's data position: everything taken so far, exactly.
    public var position: DataPosition {
        if let current { return DataPosition(rank: client.rank, leaseId: current.id, offset: offset) }
        if let finished { return DataPosition(rank: client.rank, leaseId: finished.id, offset: finished.count) }
        return DataPosition(rank: client.rank, leaseId: 0, offset: 0)
    }
}
