import XCTest
@testable import Control

/// The per-rank deterministic plan, epoch ends (dropped ledger), the job's end, corpus
/// fingerprints and world-size changes (pure state machine, no sockets).
extension CoordinatorStateTests {
    /// Consumes `rank`'s leases fully, in order, while they are of epoch `epoch` (and at most
    /// `limit`); returns them. The rank's leases of later epochs stay outstanding.
    func consumeEpoch(_ h: inout Harness, rank: Int32, epoch: UInt32, limit: Int = .max) -> [Lease] {
        var got: [Lease] = []
        while got.count < limit, let g = h.leases(rank, want: 2), let l = g.leases.first, l.epoch == epoch {
            got.append(l)
            h.send(rank, .leaseReturn(LeaseReturn(leaseId: l.id, consumed: l.count)))
        }
        return got
    }

    func ack(_ out: [Outgoing]) -> Bool {
        if case .ack? = out.first?.envelope.body { return true }
        return false
    }

    /// (a) The same per-rank requests in two different interleavings give every rank the same leases.
    func testSameRequestsInAnotherInterleavingGiveEachRankTheSameLeases() {
        func run(registerOrder: [Int32], requests: [Int32]) -> [Int32: [SampleRange]] {
            var h = Harness(config: config(world: 3, leaseSize: 64, epochs: 2, k: 2), index: Fixtures.index(sizes))
            for r in registerOrder { XCTAssertNotNil(h.register(r)) }
            var got: [Int32: [SampleRange]] = [:]
            for r in requests {
                guard let g = h.leases(r, want: 2), let l = g.leases.first else { continue }
                got[r, default: []].append(l.range())
                h.send(r, .leaseReturn(LeaseReturn(leaseId: l.id, consumed: l.count)))
            }
            return got
        }
        let roundRobin = run(registerOrder: [0, 1, 2], requests: (0..<40).flatMap { _ in [0, 1, 2] as [Int32] })
        let oneAfterAnother = run(registerOrder: [2, 1, 0],
                                  requests: Array(repeating: 2, count: 40) + Array(repeating: 0, count: 40) + Array(repeating: 1, count: 40))
        XCTAssertEqual(roundRobin, oneAfterAnother, "which rank reads which samples does not depend on request timing")
        XCTAssertEqual(roundRobin.keys.sorted(), [0, 1, 2])
        for (r, ranges) in roundRobin {
            XCTAssertEqual(SampleRange.total(ranges), 2 * (sizes.reduce(0, +) / 3), "rank \(r): its whole stream in both epochs")
        }
        let all = roundRobin.values.flatMap { $0 }
        XCTAssertEqual(SampleRange.total(SampleRange.merged(all)), SampleRange.total(all), "no sample leased to two ranks")
    }

    /// Rank 0 reads its whole epoch-0 stream (and prefetches epoch 1); rank 1 reads 3 leases and 7
    /// samples of a fourth, where the ranks agree epoch 0 ends. Returns the leases.
    func rank1EndsEpoch0Early(_ h: inout Harness) -> (r0: [Lease], r1: [Lease], r1At: Lease) {
        let r0 = consumeEpoch(&h, rank: 0, epoch: 0)
        let r1 = consumeEpoch(&h, rank: 1, epoch: 0, limit: 3)
        let at = h.leases(1, want: 2)!.leases[0]
        XCTAssertEqual(at.epoch, 0)
        return (r0, r1, at)
    }

    /// (b) An epoch-end commit drops exactly the leftovers and the tail: ledger ∪ dropped is every
    /// sample of the epoch exactly once, and the next epoch's leases stay valid.
    func testEpochEndCommitDropsExactlyTheLeftoversAndTheTail() throws {
        var h = Harness(config: config(world: 2, leaseSize: 50, epochs: 2, k: 2), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.register(1)
        let (r0, r1, at) = rank1EndsEpoch0Early(&h)
        let next0 = h.state.outstandingLeases(of: 0)
        XCTAssertFalse(next0.isEmpty)
        XCTAssertTrue(next0.allSatisfy { $0.epoch == 1 }, "rank 0 prefetched epoch 1")
        let tail0 = h.state.planner.tail(epoch: 0)
        XCTAssertEqual(SampleRange.total(tail0), sizes.reduce(0, +) % 2)
        XCTAssertTrue(ack(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 100, path: "/ck/100", positions: [
            DataPosition(rank: 0, leaseId: r0.last!.id, offset: r0.last!.count), DataPosition(rank: 1, leaseId: at.id, offset: 7)], epochsDone: 1)))))
        XCTAssertEqual(h.state.epochsDone, 1)
        XCTAssertEqual(h.state.checkpoints.last?.epochsDone, 1)
        let read = SampleRange.merged((r0 + r1).map { $0.range() } + [at.range(from: 0, to: 7)])
        XCTAssertEqual(h.state.ledger, read, "the ledger is what was read")
        // Dropped: the rest of rank 1's stream (from sample 7 of `at` on) and the tail, nothing else.
        let b = h.state.planner.streamBoundaries(epoch: 0)
        let stream1 = h.state.planner.ranges(epoch: 0, from: b[1], to: b[2])
        XCTAssertEqual(SampleRange.total(h.state.dropped), SampleRange.total(stream1) - SampleRange.total(r1.map { $0.range() }) - 7 + SampleRange.total(tail0))
        XCTAssertEqual(SampleRange.total(h.state.ledger) + SampleRange.total(h.state.dropped), sizes.reduce(0, +), "ledger and dropped are disjoint")
        XCTAssertEqual(SampleRange.merged(h.state.ledger + h.state.dropped), Fixtures.everySample(sizes, epochs: 1), "every sample of epoch 0 once")
        XCTAssertTrue(tail0.allSatisfy { t in h.state.dropped.contains { $0.shard == t.shard && $0.epoch == 0 && $0.start <= t.start && t.end <= $0.end } })
        XCTAssertEqual(h.state.checkpoints.last?.dropped, h.state.dropped)
        XCTAssertTrue(h.state.leases.values.allSatisfy { $0.lease.epoch == 1 }, "epoch 0's leases are gone")
        XCTAssertTrue(h.state.planner.queues.allSatisfy { $0.allSatisfy { $0.epoch == 1 } })
        assertLedgerPartition(h.state, "after the epoch-end commit")
        // The next epoch's leases stay valid: rank 0 keeps its prefetched ones, rank 1 continues
        // with the start of its epoch-1 stream.
        XCTAssertEqual(h.state.outstandingLeases(of: 0), next0)
        let n1 = try XCTUnwrap(h.leases(1, want: 2)?.leases.first)
        let b1 = h.state.planner.streamBoundaries(epoch: 1)
        XCTAssertEqual(n1.range(), h.state.planner.ranges(epoch: 1, from: b1[1], to: b1[1] + Int(n1.count)).first)
        XCTAssertEqual(n1.epoch, 1)
        h.send(0, .leaseReturn(LeaseReturn(leaseId: next0[0].id, consumed: next0[0].count)))
        XCTAssertTrue(ack(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 110, path: "/ck/110", positions: [
            DataPosition(rank: 0, leaseId: next0[0].id, offset: next0[0].count), DataPosition(rank: 1, leaseId: n1.id, offset: 3)], epochsDone: 1)))))
        XCTAssertEqual(SampleRange.total(h.state.ledger), SampleRange.total(read) + Int(next0[0].count) + 3)
        XCTAssertEqual(h.state.epochsDone, 1)
        assertLedgerPartition(h.state, "epoch 1 commit")
        // Going back on finished epochs is refused.
        XCTAssertEqual(Harness.error(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 120, path: "/ck/120", positions: [
            DataPosition(rank: 0, leaseId: next0[0].id, offset: next0[0].count), DataPosition(rank: 1, leaseId: n1.id, offset: 3)], epochsDone: 0))))?.code, .badRequest)
    }

    /// (c) The final commit (epochsDone == epochs) ends the job; status shows the epochs done and
    /// the dropped samples. A grant is `exhausted` for the rank that has leased its whole stream.
    func testFinalEpochEndCommitFinishesTheJob() throws {
        let small = [31, 20]
        var h = Harness(config: config(world: 2, leaseSize: 10, epochs: 1, k: 2), index: Fixtures.index(small))
        _ = h.register(0)
        _ = h.register(1)
        let r0 = consumeEpoch(&h, rank: 0, epoch: 0)
        XCTAssertEqual(SampleRange.total(r0.map { $0.range() }), 25, "51 samples over 2 ranks: 25 each, a tail of 1")
        let g0 = try XCTUnwrap(h.leases(0))
        XCTAssertTrue(g0.exhausted, "rank 0 leased its whole stream")
        let g1 = try XCTUnwrap(h.leases(1, want: 1))
        XCTAssertFalse(g1.exhausted, "rank 1 has not")
        let at = g1.leases[0]
        XCTAssertTrue(ack(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 5, path: "/ck/5", positions: [
            DataPosition(rank: 0, leaseId: r0.last!.id, offset: r0.last!.count), DataPosition(rank: 1, leaseId: at.id, offset: 4)])))))
        XCTAssertEqual(h.state.jobState, .running, "not done before the epoch is closed")
        XCTAssertEqual(Harness.error(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 6, path: "/ck/6", positions: [
            DataPosition(rank: 0, leaseId: r0.last!.id, offset: r0.last!.count), DataPosition(rank: 1, leaseId: at.id, offset: 4)], epochsDone: 2))))?.code,
                       .badRequest, "more epochs done than the job has")
        XCTAssertTrue(ack(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 6, path: "/ck/6", positions: [
            DataPosition(rank: 0, leaseId: r0.last!.id, offset: r0.last!.count), DataPosition(rank: 1, leaseId: at.id, offset: 4)], epochsDone: 1)))))
        XCTAssertEqual(h.state.jobState, .done)
        let status = h.state.status(now: h.now)
        XCTAssertEqual(status.jobState, .done)
        XCTAssertEqual(status.epochsDone, 1)
        XCTAssertEqual(status.droppedSamples, 51 - 25 - 4, "rank 1's unread 21 and the tail")
        XCTAssertEqual(SampleRange.merged(h.state.ledger + h.state.dropped), Fixtures.everySample(small, epochs: 1))
        XCTAssertTrue(h.state.leases.isEmpty)
        assertLedgerPartition(h.state, "job done", sizes: small)
    }

    /// (d) A rank whose corpus index differs from the coordinator's is refused, naming both.
    func testRegistrationWithAnotherCorpusFingerprintIsRejected() {
        var h = Harness(config: config(world: 2), index: Fixtures.index(sizes))
        let theirs = Fixtures.index([300, 0, 1000, 257, 1, 512]).fingerprint
        XCTAssertNotEqual(theirs, h.state.corpusFingerprint)
        let out = h.send(0, .registration(Registration(worldSize: 2, host: "h", pid: 1, buildVersion: "t", corpusFingerprint: theirs)))
        let e = Harness.error(out)
        XCTAssertEqual(e?.code, .badRequest)
        XCTAssertTrue(e?.message.contains(theirs) == true, e?.message ?? "")
        XCTAssertTrue(e?.message.contains(h.state.corpusFingerprint) == true, e?.message ?? "")
        XCTAssertTrue(h.state.ranks.isEmpty, "the rank is not registered")
        let same = h.send(0, .registration(Registration(worldSize: 2, host: "h", pid: 1, buildVersion: "t", corpusFingerprint: h.state.corpusFingerprint)))
        guard case .registrationReply? = same.first?.envelope.body else { return XCTFail("the matching fingerprint is accepted: \(same)") }
        XCTAssertNotNil(h.register(1), "no fingerprint (a client that does not check) is accepted")
    }

    /// (e) A rollback to before an epoch-end commit gives its dropped samples (not the tail) back to
    /// their owners' queues; the ranks then read every sample once with the earlier ledger.
    func testRollbackBeforeEpochEndReturnsDroppedRangesToTheirOwners() throws {
        var h = Harness(config: config(world: 2, leaseSize: 50, epochs: 2, k: 2), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.register(1)
        let first1 = try XCTUnwrap(h.leases(1, want: 2)?.leases.first)
        let first0 = try XCTUnwrap(h.leases(0, want: 2)?.leases.first)
        XCTAssertTrue(ack(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 50, path: "/ck/50", positions: [
            DataPosition(rank: 0, leaseId: first0.id, offset: 5), DataPosition(rank: 1, leaseId: first1.id, offset: 2)])))))
        let ledger50 = h.state.ledger
        let (r0, _, at) = rank1EndsEpoch0Early(&h)
        XCTAssertTrue(ack(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 100, path: "/ck/100", positions: [
            DataPosition(rank: 0, leaseId: r0.last!.id, offset: r0.last!.count), DataPosition(rank: 1, leaseId: at.id, offset: 7)], epochsDone: 1)))))
        let dropped100 = h.state.dropped
        let tail0 = h.state.planner.tail(epoch: 0)
        XCTAssertFalse(dropped100.isEmpty)
        h.state.rollback(toStep: 50)
        XCTAssertEqual(h.state.epochsDone, 0)
        XCTAssertEqual(h.state.dropped, [])
        XCTAssertEqual(h.state.ledger, ledger50)
        func covered(_ set: [SampleRange], _ r: SampleRange) -> Bool {
            SampleRange.merged(set).contains { $0.epoch == r.epoch && $0.shard == r.shard && $0.start <= r.start && r.end <= $0.end }
        }
        let b = h.state.planner.streamBoundaries(epoch: 0)
        let stream1 = h.state.planner.ranges(epoch: 0, from: b[1], to: b[2])
        // The dropped samples minus the tail (a dropped range may run into the tail: same shard).
        func samples(_ rs: [SampleRange]) -> Set<[Int]> { Set(rs.flatMap { r in (r.start..<r.end).map { [r.epoch, r.shard, $0] } }) }
        let nonTail = samples(dropped100).subtracting(samples(tail0))
        XCTAssertTrue(samples(tail0).isSubset(of: samples(dropped100)), "the tail was dropped")
        XCTAssertEqual(nonTail.count + SampleRange.total(tail0), SampleRange.total(dropped100), "dropped = rank 1's leftovers + the tail")
        XCTAssertFalse(nonTail.isEmpty)
        XCTAssertTrue(nonTail.isSubset(of: samples(stream1)), "the leftovers are all rank 1's")
        XCTAssertTrue(nonTail.isSubset(of: samples(h.state.planner.queues[1])), "back in rank 1's queue")
        XCTAssertTrue(nonTail.isDisjoint(with: samples(h.state.planner.queues[0])))
        for t in tail0 { XCTAssertFalse(h.state.planner.queues.contains { covered($0, t) }, "the tail \(t) is nobody's") }
        assertLedgerPartition(h.state, "rolled back before the epoch end")
        // Every lease was revoked: what stays leased (net of give-backs) is what checkpoint 50 committed.
        XCTAssertEqual(h.state.planner.issued[0] ?? 0, SampleRange.total(ledger50), "epoch 0 samples counted as leased")
        XCTAssertEqual(h.state.planner.issued[1] ?? 0, 0, "epoch 1 samples counted as leased")
        for r in [0, 1] as [Int32] { XCTAssertEqual(h.register(r, pid: 800)?.resumeStep, 50) }
        let rest = drain(&h, ranks: [0, 1])
        assertExactCover(ledger50 + rest.map { $0.range() } + tails(h.state, epochs: 2), epochs: 2)
    }

    /// (f) Changing the world size after a partial epoch re-deals what is left; nothing is lost or
    /// duplicated, and the invariant holds throughout.
    func testChangeWorldSizeAfterAPartialEpochRedealsTheRest() throws {
        // The planner alone: 2 ranks lease a little, then 3 ranks lease the rest.
        var p = LeasePlanner(shardSamples: sizes, seed: 5, leaseSize: 40, epochs: 1, worldSize: 2)
        var leased: [SampleRange] = []
        for i in 0..<7 { leased += [p.next(rank: i % 2)].compactMap { $0 } }
        let tailBefore = p.tail(epoch: 0)
        p.changeWorldSize(to: 3)
        XCTAssertEqual(p.worldSize, 3)
        XCTAssertEqual(p.queues.count, 3)
        let shares = p.queues.map { SampleRange.total($0) }
        XCTAssertLessThanOrEqual(shares.max()! - shares.min()!, 1, "equal pieces: \(shares)")
        XCTAssertEqual(p.tail(epoch: 0), tailBefore, "the tail stays the tail")
        for r in 0..<3 { while let x = p.next(rank: r) { leased.append(x) } }
        XCTAssertTrue(p.isExhausted)
        XCTAssertEqual(SampleRange.total(leased + tailBefore), sizes.reduce(0, +))
        XCTAssertEqual(SampleRange.merged(leased + tailBefore), Fixtures.everySample(sizes, epochs: 1))

        // The coordinator: a checkpoint mid-epoch, then 3 ranks.
        var h = Harness(config: config(world: 2, leaseSize: 40, epochs: 2, k: 2), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.register(1)
        let a = try XCTUnwrap(h.leases(0)?.leases), b = try XCTUnwrap(h.leases(1)?.leases)
        h.send(0, .leaseReturn(LeaseReturn(leaseId: a[0].id, consumed: a[0].count)))
        XCTAssertTrue(ack(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 8, path: "/ck/8", positions: [
            DataPosition(rank: 0, leaseId: a[1].id, offset: 3), DataPosition(rank: 1, leaseId: b[0].id, offset: 9)])))))
        let ledger8 = h.state.ledger
        _ = h.leases(1)
        h.state.changeWorldSize(to: 3)
        XCTAssertEqual(h.state.planner.worldSize, 3)
        XCTAssertEqual(h.state.ledger, ledger8)
        assertLedgerPartition(h.state, "after the world-size change")
        h.seqs = [:]
        for r in 0..<3 as Range<Int32> { XCTAssertEqual(h.register(r, pid: 900)?.resumeStep, 8) }
        var perRank: [Int32: [Lease]] = [:]
        let rest = drain(&h, ranks: [0, 1, 2], perRank: &perRank)
        XCTAssertEqual(perRank.keys.sorted(), [0, 1, 2], "every new rank gets a share")
        assertExactCover(ledger8 + rest.map { $0.range() } + tails(h.state, epochs: 2), epochs: 2)
    }

    /// A world size 0 coordinator adopts the first registration's world size and deals for it.
    func testWorldSizeZeroAdoptsTheFirstRegistration() throws {
        var h = Harness(config: config(world: 0), index: Fixtures.index(sizes))
        let out = h.send(1, .registration(Registration(worldSize: 3, host: "h", pid: 1, buildVersion: "t")))
        guard case .registrationReply? = out.first?.envelope.body else { return XCTFail("\(out)") }
        XCTAssertEqual(h.state.config.worldSize, 3)
        XCTAssertEqual(h.state.planner.worldSize, 3)
        let l = try XCTUnwrap(h.leases(1, want: 1)?.leases.first)
        let b = h.state.planner.streamBoundaries(epoch: 0)
        XCTAssertEqual(b, [0, 690, 1380, 2070])
        XCTAssertEqual(l.range(), h.state.planner.ranges(epoch: 0, from: 690, to: 690 + Int(l.count)).first, "rank 1's stream of a 3-rank plan")
        XCTAssertEqual(Harness.error(h.send(0, .registration(Registration(worldSize: 2, host: "h", pid: 2, buildVersion: "t"))))?.code, .badRequest)
    }
}
