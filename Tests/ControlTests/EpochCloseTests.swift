import XCTest
@testable import Control

/// The end of an epoch in the coordinator (pure, no sockets): a commit with `epochsDone` drops
/// exactly what the finished epoch left, the job finishes, rollbacks and world-size changes keep
/// the ledger invariant; registration checks the corpus fingerprint.
final class EpochCloseTests: XCTestCase {
    /// 2071 samples: with 2 ranks, streams of 1035 and a tail of 1.
    let sizes = [300, 0, 1000, 257, 1, 513]

    func harness(world: UInt32 = 2, epochs: UInt32 = 2) -> Harness {
        Harness(config: CoordinatorConfig(jobId: "job", worldSize: world, seed: 11, leaseSize: 100, epochs: epochs,
                                          maxOutstanding: 2, heartbeatTimeout: 1e9),
                index: Fixtures.index(sizes))
    }

    /// What a rank has read of its leases so far.
    struct Reader {
        var rank: Int32
        var read: [SampleRange] = []
        var position = DataPosition(rank: 0, leaseId: 0, offset: 0)
        var pending: [Lease] = []
        var seen: UInt64 = 0
    }

    /// Rank `r.rank` reads `n` more samples of epoch `epoch` in grant order (returning each lease
    /// it finishes); stops early when the epoch's leases run out. Returns how many it read.
    @discardableResult
    func read(_ h: inout Harness, _ r: inout Reader, _ n: Int, epoch: UInt32) -> Int {
        var left = n
        while left > 0 {
            if r.pending.isEmpty {
                guard let g = h.leases(r.rank, want: 2) else { XCTFail("no grant"); return n - left }
                for l in g.leases where l.id > r.seen { r.pending.append(l); r.seen = l.id }
            }
            guard let l = r.pending.first, l.epoch == epoch else { return n - left }
            let start = r.position.leaseId == l.id ? r.position.offset : 0
            let k = min(UInt64(left), l.count - start)
            r.read.append(l.range(from: start, to: start + k))
            r.position = DataPosition(rank: r.rank, leaseId: l.id, offset: start + k)
            left -= Int(k)
            if start + k == l.count {
                h.send(r.rank, .leaseReturn(LeaseReturn(leaseId: l.id, consumed: l.count)))
                r.pending.removeFirst()
            }
        }
        return n
    }

    func commit(_ h: inout Harness, step: UInt64, _ readers: [Reader], epochsDone: UInt32) -> ControlError? {
        let out = h.send(0, .checkpointCommitted(CheckpointCommitted(step: step, path: "/ck/\(step)", positions: readers.map(\.position),
                                                                     epochsDone: epochsDone)))
        return Harness.error(out)
    }

    func epochSamples(_ e: Int) -> [SampleRange] {
        sizes.enumerated().filter { $0.element > 0 }.map { SampleRange(epoch: e, shard: $0.offset, start: 0, end: $0.element) }
    }

    /// Ledger ∪ dropped ∪ live leases' uncommitted parts ∪ planner (queues and unstarted streams)
    /// ∪ tails of open epochs = every sample of every epoch, exactly once.
    func assertPartition(_ st: CoordinatorState, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        var pieces = st.ledger + st.dropped
        for rec in st.leases.values { pieces.append(rec.lease.range(from: rec.committedOffset, to: rec.returnedConsumed ?? rec.lease.count)) }
        var rest = st.planner
        for r in 0..<rest.worldSize { while let x = rest.next(rank: r) { pieces.append(x) } }
        for e in st.epochsDone..<Int(st.config.epochs) { pieces += st.planner.tail(epoch: e) }
        XCTAssertEqual(SampleRange.total(pieces), sizes.reduce(0, +) * Int(st.config.epochs), "\(what): overlap or loss", file: file, line: line)
        XCTAssertEqual(SampleRange.merged(pieces), (0..<Int(st.config.epochs)).flatMap(epochSamples), "\(what): coverage", file: file, line: line)
    }

    /// Epoch 0 ends with rank 0 1000 samples into its stream and rank 1 1010 (their loaders'
    /// last full batches): the epoch-end commit drops each rank's rest and the tail, and nothing
    /// else; epoch 1's leases already granted stay valid; the final commit finishes the job.
    func testEpochEndCommitDropsExactlyTheLeftoversAndFinishesTheJob() throws {
        var h = harness()
        _ = h.register(0)
        _ = h.register(1)
        var readers = [Reader(rank: 0), Reader(rank: 1)]
        XCTAssertEqual(read(&h, &readers[0], 500, epoch: 0), 500)
        XCTAssertEqual(read(&h, &readers[1], 500, epoch: 0), 500)
        XCTAssertNil(commit(&h, step: 10, readers, epochsDone: 0))
        XCTAssertEqual(read(&h, &readers[0], 500, epoch: 0), 500)
        XCTAssertEqual(read(&h, &readers[1], 510, epoch: 0), 510)
        // Rank 1 has 25 samples of epoch 0 left, rank 0 35; rank 1 prefetches on into epoch 1.
        _ = h.leases(1, want: 2, takenThrough: readers[1].seen)
        let next = h.state.leases.values.filter { $0.rank == 1 && $0.lease.epoch == 1 }.map(\.lease.id)
        XCTAssertFalse(next.isEmpty, "rank 1 holds epoch 1 leases")
        assertPartition(h.state, "before the epoch-end commit")
        XCTAssertNil(commit(&h, step: 20, readers, epochsDone: 1))
        XCTAssertEqual(h.state.epochsDone, 1)
        let trained0 = h.state.ledger.filter { $0.epoch == 0 }, dropped0 = h.state.dropped.filter { $0.epoch == 0 }
        XCTAssertEqual(SampleRange.merged(trained0), SampleRange.merged(readers.flatMap(\.read)), "the ledger is what the ranks read")
        XCTAssertEqual(SampleRange.total(dropped0), 35 + 25 + 1, "each rank's rest and the tail")
        XCTAssertEqual(SampleRange.merged(trained0 + dropped0), epochSamples(0), "epoch 0: every sample once")
        XCTAssertEqual(SampleRange.total(trained0) + SampleRange.total(dropped0), 2071)
        XCTAssertFalse(h.state.leases.values.contains { $0.lease.epoch == 0 }, "epoch 0's leases are gone")
        XCTAssertEqual(Set(next).subtracting(h.state.leases.keys), [], "epoch 1's leases stay granted")
        XCTAssertEqual(h.state.checkpoints.last?.dropped, SampleRange.merged(dropped0))
        assertPartition(h.state, "after the epoch-end commit")
        // Epoch 1 to its end (the ranks' views of epoch 0 leases are stale: they drop them).
        for i in 0..<2 {
            readers[i].pending.removeAll { $0.epoch == 0 }
            readers[i].read = []
            XCTAssertEqual(read(&h, &readers[i], 10_000, epoch: 1), 1035, "rank \(i) reads its whole epoch-1 stream")
        }
        XCTAssertNil(commit(&h, step: 40, readers, epochsDone: 2))
        XCTAssertEqual(h.state.jobState, .done)
        XCTAssertEqual(SampleRange.merged(h.state.ledger + h.state.dropped), epochSamples(0) + epochSamples(1))
        XCTAssertEqual(SampleRange.total(h.state.ledger) + SampleRange.total(h.state.dropped), 2 * 2071)
        let status = h.state.status(now: h.now)
        XCTAssertEqual(status.epochsDone, 2)
        XCTAssertEqual(status.droppedSamples, 61 + 1)
        XCTAssertEqual(status.jobState, .done)
        // More epochs than the job has, or fewer than done, are refused.
        XCTAssertEqual(commit(&h, step: 50, readers, epochsDone: 3)?.code, .badRequest)
    }

    /// Rolling back past an epoch-end commit gives the dropped samples back to their ranks'
    /// streams (the tail stays out: the next close drops it again); the invariant holds and a
    /// second run of the epoch reads every sample of the streams exactly once.
    func testRollbackBeforeAnEpochEndReturnsTheDroppedSamples() throws {
        var h = harness(epochs: 1)
        _ = h.register(0)
        _ = h.register(1)
        var readers = [Reader(rank: 0), Reader(rank: 1)]
        read(&h, &readers[0], 300, epoch: 0)
        read(&h, &readers[1], 300, epoch: 0)
        XCTAssertNil(commit(&h, step: 5, readers, epochsDone: 0))
        let ledger5 = h.state.ledger
        read(&h, &readers[0], 700, epoch: 0)
        read(&h, &readers[1], 720, epoch: 0)
        XCTAssertNil(commit(&h, step: 10, readers, epochsDone: 1))
        XCTAssertEqual(h.state.jobState, .done)
        h.state.rollback(toStep: 5)
        XCTAssertEqual(h.state.epochsDone, 0)
        XCTAssertEqual(h.state.ledger, ledger5)
        XCTAssertEqual(h.state.dropped, [])
        assertPartition(h.state, "after rolling back past the epoch end")
        // A new attempt reads the rest of both streams: with checkpoint 5's ledger and the tail,
        // every sample once.
        h.seqs = [:]
        _ = h.register(0, pid: 500)
        _ = h.register(1, pid: 500)
        var again = [Reader(rank: 0), Reader(rank: 1)]
        for i in 0..<2 { read(&h, &again[i], 10_000, epoch: 0) }
        let tail = h.state.planner.tail(epoch: 0)
        XCTAssertEqual(SampleRange.total(tail), 1)
        let all = ledger5 + again.flatMap(\.read) + tail
        XCTAssertEqual(SampleRange.total(all), 2071, "overlap or loss")
        XCTAssertEqual(SampleRange.merged(all), epochSamples(0))
        XCTAssertEqual(again[0].read.count > 0 && again[1].read.count > 0, true)
    }

    /// The job continues on 3 ranks after a partial epoch on 2: what is left of the epoch is
    /// re-dealt (nothing lost, nothing twice) and the next epoch is planned for 3.
    func testWorldSizeChangeRedealsTheRestOfTheEpoch() throws {
        var h = harness(epochs: 2)
        _ = h.register(0)
        _ = h.register(1)
        var readers = [Reader(rank: 0), Reader(rank: 1)]
        read(&h, &readers[0], 400, epoch: 0)
        read(&h, &readers[1], 250, epoch: 0)
        XCTAssertNil(commit(&h, step: 5, readers, epochsDone: 0))
        let ledger5 = h.state.ledger
        h.state.changeWorldSize(to: 3)
        XCTAssertEqual(h.state.planner.worldSize, 3)
        assertPartition(h.state, "after the world-size change")
        let left = h.state.planner.queues.map(SampleRange.total)
        XCTAssertEqual(left.reduce(0, +), 2070 - 650, "what is left of both streams")
        XCTAssertLessThanOrEqual((left.max() ?? 0) - (left.min() ?? 0), 1, "re-dealt in equal shares: \(left)")
        h.seqs = [:]
        for r: Int32 in 0..<3 { XCTAssertNotNil(h.register(r, pid: 900)) }
        var three = (0..<3).map { Reader(rank: Int32($0)) }
        for i in 0..<3 { read(&h, &three[i], 10_000, epoch: 0) }
        let all = ledger5 + three.flatMap(\.read) + h.state.planner.tail(epoch: 0)
        XCTAssertEqual(SampleRange.total(all), 2071, "epoch 0: overlap or loss")
        XCTAssertEqual(SampleRange.merged(all), epochSamples(0))
        // Epoch 1 is planned for 3 ranks: streams of ⌊2071/3⌋ = 690.
        XCTAssertEqual(h.state.planner.streamBoundaries(epoch: 1), [0, 690, 1380, 2070])
    }

    /// A rank whose corpus index is not the coordinator's is refused, with both fingerprints.
    func testRegistrationWithAnotherCorpusIsRefused() {
        var h = harness()
        let mine = Fixtures.index(sizes).fingerprint
        let other = Fixtures.index([300, 0, 1000, 257, 1, 512]).fingerprint
        XCTAssertNotEqual(mine, other)
        XCTAssertEqual(h.state.corpusFingerprint, mine)
        let out = h.send(0, .registration(Registration(worldSize: 2, host: "h", pid: 1, buildVersion: "t", corpusFingerprint: other)))
        let e = Harness.error(out)
        XCTAssertEqual(e?.code, .badRequest)
        XCTAssertTrue(e?.message.contains(mine) == true && e?.message.contains(other) == true, e?.message ?? "")
        XCTAssertTrue(h.state.ranks.isEmpty, "not registered")
        let ok = h.send(0, .registration(Registration(worldSize: 2, host: "h", pid: 1, buildVersion: "t", corpusFingerprint: mine)))
        guard case .registrationReply(let reply)? = ok.first?.envelope.body else { return XCTFail("the matching index registers") }
        XCTAssertEqual(reply.epochs, 2, "the reply names the job's epochs")
    }
}
