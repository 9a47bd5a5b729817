import XCTest
@testable import Control

/// Drives a ``CoordinatorState`` like ranks and tools would, without sockets.
struct Harness {
    var state: CoordinatorState
    var now: Double = 1000
    var seqs: [Int32: UInt64] = [:]
    let token: String?

    init(config: CoordinatorConfig, index: CorpusIndex) {
        state = CoordinatorState(config: config, index: index)
        token = config.authToken
    }

    static func peer(_ rank: Int32) -> Peer { Peer(Array("peer-\(rank)".utf8)) }

    @discardableResult
    mutating func send(_ rank: Int32, _ body: Body, seq: UInt64? = nil, token: String? = nil, jobId: String? = nil) -> [Outgoing] {
        let s = seq ?? { seqs[rank, default: 0] += 1; return seqs[rank, default: 0] }()
        let env = Envelope(jobId: jobId ?? state.config.jobId, authToken: token ?? self.token ?? "", seq: s, rank: rank, body: body)
        return state.handle(env, from: Harness.peer(rank), now: now)
    }

    mutating func register(_ rank: Int32, pid: UInt32 = 100) -> RegistrationReply? {
        let out = send(rank, .registration(Registration(worldSize: state.config.worldSize, host: "h", pid: pid + UInt32(rank), buildVersion: "t")))
        if case .registrationReply(let r)? = out.first?.envelope.body { return r }
        return nil
    }

    mutating func leases(_ rank: Int32, want: UInt32 = 4, takenThrough: UInt64 = 0) -> LeaseGrant? {
        if case .leaseGrant(let g)? = send(rank, .leaseRequest(LeaseRequest(want: want, takenThrough: takenThrough))).first?.envelope.body { return g }
        return nil
    }

    static func error(_ out: [Outgoing]) -> ControlError? {
        if case .error(let e)? = out.first?.envelope.body { return e }
        return nil
    }
}

final class CoordinatorStateTests: XCTestCase {
    let sizes: [Int] = [300, 0, 1000, 257, 1, 513]

    func config(world: UInt32, leaseSize: UInt64 = 100, epochs: UInt32 = 2, k: UInt32 = 3, seed: UInt64 = 7,
                timeout: Double = 10, token: String? = nil) -> CoordinatorConfig {
        CoordinatorConfig(jobId: "job", worldSize: world, seed: seed, leaseSize: leaseSize, epochs: epochs,
                          maxOutstanding: k, heartbeatTimeout: timeout, authToken: token)
    }

    /// Runs every rank round-robin (take the oldest lease, use it fully, return it) until the plan
    /// is exhausted; returns the leases in the order they were consumed.
    func drain(_ h: inout Harness, ranks: [Int32], k: UInt32 = 3) -> [Lease] {
        var perRank: [Int32: [Lease]] = [:]
        return drain(&h, ranks: ranks, k: k, perRank: &perRank)
    }

    /// ``drain(_:ranks:k:)`` that also says which rank consumed which lease.
    func drain(_ h: inout Harness, ranks: [Int32], k: UInt32 = 3, perRank: inout [Int32: [Lease]]) -> [Lease] {
        var consumed: [Lease] = []
        var seen = Set<UInt64>()
        var idle = 0
        while idle < ranks.count {
            idle = 0
            for r in ranks {
                guard let g = h.leases(r, want: k), let lease = g.leases.first else { idle += 1; continue }
                XCTAssertLessThanOrEqual(g.leases.count, Int(k), "never more than K outstanding")
                XCTAssertTrue(seen.insert(lease.id).inserted, "lease \(lease.id) handed out twice")
                XCTAssertLessThanOrEqual(lease.count, h.state.config.leaseSize)
                consumed.append(lease)
                perRank[r, default: []].append(lease)
                h.send(r, .leaseReturn(LeaseReturn(leaseId: lease.id, consumed: lease.count)))
            }
        }
        return consumed
    }

    func assertExactCover(_ ranges: [SampleRange], epochs: UInt32, file: StaticString = #filePath, line: UInt = #line) {
        let total = sizes.reduce(0, +) * Int(epochs)
        XCTAssertEqual(SampleRange.total(ranges), total, "sample count (duplicates or losses)", file: file, line: line)
        XCTAssertEqual(SampleRange.merged(ranges), Fixtures.everySample(sizes, epochs: Int(epochs)), "coverage", file: file, line: line)
    }

    /// The tails of epochs 0..<epochs (nobody's stream; dropped when an epoch closes).
    func tails(_ state: CoordinatorState, epochs: UInt32) -> [SampleRange] {
        (0..<Int(epochs)).flatMap { state.planner.tail(epoch: $0) }
    }

    /// Rank r's streams of epochs 0..<epochs, as planned (merged).
    func stream(_ state: CoordinatorState, rank r: Int, epochs: UInt32) -> [SampleRange] {
        SampleRange.merged((0..<Int(epochs)).flatMap { e -> [SampleRange] in
            let b = state.planner.streamBoundaries(epoch: e)
            return state.planner.ranges(epoch: e, from: b[r], to: b[r + 1])
        })
    }

    func testLeasePlanCoversEveryEpochSampleExactlyOnceFor1_2_3_7Ranks() {
        for world in [1, 2, 3, 7] as [UInt32] {
            var h = Harness(config: config(world: world), index: Fixtures.index(sizes))
            let ranks = (0..<Int32(world)).map { $0 }
            for r in ranks { XCTAssertNotNil(h.register(r)) }
            XCTAssertEqual(h.state.jobState, .running)
            var perRank: [Int32: [Lease]] = [:]
            let consumed = drain(&h, ranks: ranks, perRank: &perRank)
            // The drains of all ranks and the tails partition every epoch.
            let tail = tails(h.state, epochs: 2)
            XCTAssertEqual(SampleRange.total(tail), (sizes.reduce(0, +) % Int(world)) * 2, "world \(world): tail = N mod W per epoch")
            assertExactCover(consumed.map { $0.range() } + tail, epochs: 2)
            XCTAssertTrue(h.state.planner.isExhausted)
            for r in ranks {
                // What a rank drains is exactly its stream, in plan order, epoch after epoch.
                let mine = perRank[r, default: []]
                XCTAssertEqual(SampleRange.merged(mine.map { $0.range() }), stream(h.state, rank: Int(r), epochs: 2), "world \(world) rank \(r)")
                XCTAssertEqual(SampleRange.total(mine.map { $0.range() }), (sizes.reduce(0, +) / Int(world)) * 2, "equal shares")
                XCTAssertEqual(mine.map(\.epoch), mine.map(\.epoch).sorted(), "epoch 0 before epoch 1")
                XCTAssertTrue(h.state.planner.isExhausted(rank: Int(r)))
            }
        }
    }

    func testEpochPlanIsSeededAndDeterministic() {
        let a = LeasePlanner.shardOrder(epoch: 0, seed: 7, shardCount: 50)
        XCTAssertEqual(a, LeasePlanner.shardOrder(epoch: 0, seed: 7, shardCount: 50))
        XCTAssertEqual(a.sorted(), Array(0..<50))
        XCTAssertNotEqual(a, LeasePlanner.shardOrder(epoch: 1, seed: 7, shardCount: 50), "epochs are reshuffled")
        XCTAssertNotEqual(a, LeasePlanner.shardOrder(epoch: 0, seed: 8, shardCount: 50), "the seed matters")
        var p1 = LeasePlanner(shardSamples: sizes, seed: 3, leaseSize: 64, epochs: 2, worldSize: 2)
        var p2 = p1
        for i in 0..<20 { XCTAssertEqual(p1.next(rank: i % 2), p2.next(rank: i % 2)) }
        // The plan does not depend on who asks first: rank 1's leases are the same whether rank 0
        // asked before or not.
        var q1 = LeasePlanner(shardSamples: sizes, seed: 3, leaseSize: 64, epochs: 2, worldSize: 2)
        var q2 = q1
        let a1 = (0..<10).compactMap { _ in q1.next(rank: 1) }
        for _ in 0..<7 { _ = q2.next(rank: 0) }
        let a2 = (0..<10).compactMap { _ in q2.next(rank: 1) }
        XCTAssertEqual(a1, a2)
        XCTAssertEqual(a1.count, 10)
        XCTAssertTrue(a1.allSatisfy { $0.count <= 64 })
    }

    func testPartialReturnReissuesTheRest() {
        var h = Harness(config: config(world: 1, epochs: 1, k: 1), index: Fixtures.index([250]))
        _ = h.register(0)
        let first = h.leases(0, want: 1)!.leases[0]
        XCTAssertEqual(first.count, 100)
        let out = h.send(0, .leaseReturn(LeaseReturn(leaseId: first.id, consumed: 30)))
        guard case .leaseGrant(let g)? = out.first?.envelope.body else { return XCTFail("a return answers with a grant") }
        // The unused part goes back to the front of the rank's queue (merged with the rest of its
        // stream in plan order), so the next lease starts right where the rank stopped.
        XCTAssertEqual(g.leases.map { [$0.start, $0.end] }, [[first.start + 30, first.start + 130]], "the unused part comes back first")
        XCTAssertEqual(h.state.planner.queues[0], [SampleRange(shard: 0, start: 130, end: 250)])
        XCTAssertGreaterThan(g.leases[0].id, first.id)
    }

    func testCheckpointLedgerAndRollbackRestoreExactAccounting() {
        var h = Harness(config: config(world: 2, leaseSize: 50, epochs: 1, k: 2), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.register(1)
        let l0 = h.leases(0)!.leases, l1 = h.leases(1)!.leases
        XCTAssertEqual(l0.count, 2)
        // rank 0 finished its first lease and read 10 of the second; rank 1 read 20 of its first.
        h.send(0, .leaseReturn(LeaseReturn(leaseId: l0[0].id, consumed: l0[0].count)))
        let commit1 = CheckpointCommitted(step: 10, path: "/ck/10", positions: [
            DataPosition(rank: 0, leaseId: l0[1].id, offset: 10), DataPosition(rank: 1, leaseId: l1[0].id, offset: 20)])
        guard case .ack? = h.send(0, .checkpointCommitted(commit1)).first?.envelope.body else { return XCTFail("commit acked") }
        func r(_ l: Lease, _ a: UInt64, _ b: UInt64) -> SampleRange { l.range(from: a, to: b) }
        let ledger10 = SampleRange.merged([r(l0[0], 0, l0[0].count), r(l0[1], 0, 10), r(l1[0], 0, 20)])
        XCTAssertEqual(h.state.ledger, ledger10)
        XCTAssertEqual(h.state.checkpoints.last?.committedSamples, l0[0].count + 30)
        // A duplicate commit is acknowledged without change; an older step is refused.
        let v = h.state.durableVersion
        guard case .ack? = h.send(0, .checkpointCommitted(commit1)).first?.envelope.body else { return XCTFail("duplicate acked") }
        XCTAssertEqual(h.state.durableVersion, v)
        XCTAssertEqual(Harness.error(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 5, path: "x", positions: []))))?.code, .outOfOrder)
        // Positions naming leases never granted, or another rank's lease, are refused.
        XCTAssertEqual(Harness.error(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 15, path: "x", positions: [
            DataPosition(rank: 0, leaseId: 10_000, offset: 0), DataPosition(rank: 1, leaseId: l1[0].id, offset: 20)]))))?.code, .badRequest)
        XCTAssertEqual(Harness.error(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 15, path: "x", positions: [
            DataPosition(rank: 0, leaseId: l1[0].id, offset: 0), DataPosition(rank: 1, leaseId: l1[0].id, offset: 20)]))))?.code, .badRequest)
        XCTAssertEqual(h.state.durableVersion, v)
        // Missing positions are refused.
        XCTAssertEqual(Harness.error(h.send(0, .checkpointCommitted(CheckpointCommitted(step: 15, path: "x", positions: []))))?.code, .badRequest)

        // More progress and a second checkpoint.
        h.send(1, .leaseReturn(LeaseReturn(leaseId: l1[0].id, consumed: l1[0].count)))
        let commit2 = CheckpointCommitted(step: 20, path: "/ck/20", positions: [
            DataPosition(rank: 0, leaseId: l0[1].id, offset: 40), DataPosition(rank: 1, leaseId: l1[1].id, offset: 5)])
        _ = h.send(0, .checkpointCommitted(commit2))
        XCTAssertEqual(h.state.checkpoints.map(\.step), [10, 20])
        XCTAssertNotEqual(h.state.ledger, ledger10)
        // Leases handed out after step 20 that will be lost in the rollback.
        _ = h.leases(0); _ = h.leases(1)

        h.state.rollback(toStep: 10)
        XCTAssertEqual(h.state.ledger, ledger10, "rollback restores the ledger of step 10")
        XCTAssertEqual(h.state.checkpoints.map(\.step), [10])
        XCTAssertEqual(h.state.jobState, .waiting)
        XCTAssertTrue(h.state.leases.isEmpty)

        // A new attempt with 3 ranks consumes the rest: ledger + new leases = every sample once.
        var h2 = h
        h2.state = h.state
        let world3 = (0..<2).map { Int32($0) }
        for r in world3 { XCTAssertEqual(h2.register(r, pid: 500)?.resumeStep, 10) }
        let rest = drain(&h2, ranks: world3)
        assertExactCover(h2.state.ledger + rest.map { $0.range() } + tails(h2.state, epochs: 1), epochs: 1)
    }

    /// With one detailed checkpoint, the older ones fold into one record (no positions, merged
    /// ranges): the ledger and the registration reply are unchanged, the fold survives a snapshot,
    /// and a rollback to the start gives the folded samples back too (every sample once).
    func testOldCheckpointsFoldAndTheLedgerStaysExact() throws {
        var h = Harness(config: config(world: 1, leaseSize: 50, epochs: 1, k: 1), index: Fixtures.index(sizes))
        h.state.detailedCheckpoints = 1
        _ = h.register(0)
        var ledgers: [[SampleRange]] = []
        for step in [10, 20, 30] as [UInt64] {
            let l = h.leases(0, want: 1)!.leases[0]
            h.send(0, .leaseReturn(LeaseReturn(leaseId: l.id, consumed: l.count)))
            guard case .ack? = h.send(0, .checkpointCommitted(CheckpointCommitted(step: step, path: "/ck/\(step)", positions: [
                DataPosition(rank: 0, leaseId: l.id, offset: l.count)]))).first?.envelope.body else { return XCTFail("commit \(step) acked") }
            ledgers.append(h.state.ledger)
        }
        XCTAssertEqual(h.state.checkpoints.map(\.step), [30])
        XCTAssertEqual(h.state.folded?.count, 2)
        XCTAssertEqual(h.state.folded?.throughStep, 20)
        XCTAssertEqual(SampleRange.merged((h.state.folded?.ranges ?? []) + h.state.checkpoints.flatMap(\.ranges)), ledgers[2])
        XCTAssertEqual(h.state.checkpoints.last?.committedSamples, UInt64(SampleRange.total(ledgers[2])))
        let restored = try JSONDecoder().decode(CoordinatorState.self, from: JSONEncoder().encode(h.state))
        XCTAssertEqual(restored.folded, h.state.folded)
        XCTAssertEqual(restored.ledger, h.state.ledger)

        h.state.rollback()  // to the last (detailed) checkpoint: nothing changes in the ledger
        XCTAssertEqual(h.state.ledger, ledgers[2])
        XCTAssertEqual(h.register(0, pid: 600)?.resumeStep, 30)
        h.state.rollback(toStep: 0)  // back to the start: the folded history returns to the plan
        XCTAssertNil(h.state.folded)
        XCTAssertEqual(h.state.ledger, [])
        XCTAssertEqual(h.register(0, pid: 700)?.resumeStep, 0)
        let all = drain(&h, ranks: [0])
        assertExactCover(all.map { $0.range() }, epochs: 1)
    }

    func testHeartbeatTimeoutMarksRankLostAndFailsJobAtLastCheckpoint() {
        var h = Harness(config: config(world: 2, timeout: 10), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.register(1)
        let l0 = h.leases(0)!.leases, l1 = h.leases(1)!.leases
        _ = h.send(0, .checkpointCommitted(CheckpointCommitted(step: 50, path: "/ck/50", positions: [
            DataPosition(rank: 0, leaseId: l0[0].id, offset: 5), DataPosition(rank: 1, leaseId: l1[0].id, offset: 0)])))
        h.now += 6
        h.send(0, .heartbeat(Heartbeat(step: 51)))
        h.now += 3
        XCTAssertTrue(h.state.tick(now: h.now).isEmpty)
        XCTAssertEqual(h.state.jobState, .running, "9 s of silence is within the 10 s timeout")
        h.now += 2
        _ = h.state.tick(now: h.now)
        XCTAssertEqual(h.state.jobState, .failed)
        XCTAssertEqual(h.state.ranks[1]?.health, .lost)
        XCTAssertEqual(h.state.ranks[0]?.health, .alive)
        XCTAssertTrue(h.state.failureReason.contains("rank 1"), h.state.failureReason)
        XCTAssertTrue(h.state.failureReason.contains("step 50"), h.state.failureReason)
        XCTAssertEqual(h.state.status(now: h.now).ranks.map(\.health), [.alive, .lost])
        XCTAssertEqual(Harness.error(h.send(0, .leaseRequest(LeaseRequest(want: 2))))?.code, .jobFailed)
        // The restarted job registers again and resumes at the checkpoint; uncommitted data is re-issued.
        let reply = h.register(0, pid: 900)
        XCTAssertEqual(reply?.resumeStep, 50)
        XCTAssertEqual(reply?.resumeCheckpoint, "/ck/50")
        XCTAssertEqual(h.state.attempt, 2)
        let again = h.leases(0)!.leases
        XCTAssertEqual(again.first.map { [UInt64($0.epoch), UInt64($0.shard), $0.start] }, [UInt64(l0[0].epoch), UInt64(l0[0].shard), l0[0].start + 5])
    }

    func testCommandFanOutReachesRankZeroOnly() {
        var h = Harness(config: config(world: 2), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.register(1)
        let out = h.send(-1, .command(Command(kind: .checkpointNow, reason: "user")))
        guard case .ack(let ack)? = out.first?.envelope.body else { return XCTFail("the tool gets an ack") }
        XCTAssertEqual(out.count, 2, "ack + push to rank 0")
        XCTAssertEqual(out[1].peer, Harness.peer(0))
        XCTAssertEqual(out[1].envelope.body, .command(Command(id: ack.commandId, kind: .checkpointNow, reason: "user")))
        guard case .heartbeatReply(let r1)? = h.send(1, .heartbeat(Heartbeat(step: 1))).first?.envelope.body else { return XCTFail() }
        XCTAssertTrue(r1.commands.isEmpty)
        guard case .heartbeatReply(let r0)? = h.send(0, .heartbeat(Heartbeat(step: 1))).first?.envelope.body else { return XCTFail() }
        XCTAssertEqual(r0.commands.map(\.kind), [.checkpointNow], "resent until acknowledged")
        guard case .ack(let stopAck)? = h.send(-1, .command(Command(kind: .stop))).first?.envelope.body else { return XCTFail() }
        XCTAssertEqual(h.state.jobState, .stopping)
        guard case .heartbeatReply(let r0b)? = h.send(0, .heartbeat(Heartbeat(step: 2, lastCommandId: ack.commandId))).first?.envelope.body else { return XCTFail() }
        XCTAssertEqual(r0b.commands.map(\.kind), [.stop])
        _ = h.send(0, .heartbeat(Heartbeat(step: 3, lastCommandId: stopAck.commandId)))
        XCTAssertEqual(h.state.jobState, .stopped)
        XCTAssertTrue(h.state.pendingCommands.isEmpty)
    }

    func testSnapshotRestartResumesSameLeases() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var h = Harness(config: config(world: 2), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.register(1)
        let before0 = h.leases(0)!.leases, before1 = h.leases(1)!.leases
        h.send(0, .leaseReturn(LeaseReturn(leaseId: before0[0].id, consumed: 7)))
        let store = SnapshotStore(directory: dir)
        try store.save(h.state)
        var restarted = h
        restarted.state = try XCTUnwrap(try store.load())
        restarted.state.resumeAfterRestart(now: h.now + 100)
        XCTAssertEqual(restarted.state.ranks[0]?.lastSeen, h.now + 100, "restart gives ranks a fresh heartbeat window")
        // The same (duplicate) request is answered with the same leases.
        XCTAssertEqual(restarted.leases(1)!.leases, before1)
        // Both continue identically: the restored plan is the same plan.
        let a = h.leases(0)!.leases, b = restarted.leases(0)!.leases
        XCTAssertEqual(a, b)
        // A rank re-registering after the restart (same process, same session) keeps its leases:
        // not a relaunch.
        _ = restarted.register(1)
        XCTAssertEqual(restarted.state.outstandingLeases(of: 1), before1)
        XCTAssertEqual(restarted.state.attempt, 1)
    }

    func testRejectsBadMessagesWithoutChangingState() {
        var h = Harness(config: config(world: 2, token: "s3cret"), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.leases(0)
        let snapshotLeases = h.state.leases, version = h.state.durableVersion
        XCTAssertEqual(Harness.error(h.send(0, .leaseRequest(LeaseRequest(want: 4)), token: "wrong"))?.code, .unauthenticated)
        XCTAssertEqual(Harness.error(h.send(0, .registration(Registration(worldSize: 2, host: "x", pid: 1, buildVersion: "")), token: ""))?.code, .unauthenticated)
        XCTAssertEqual(Harness.error(h.send(0, .heartbeat(Heartbeat(step: 1)), jobId: "other"))?.code, .wrongJob)
        XCTAssertEqual(Harness.error(h.send(1, .leaseRequest(LeaseRequest(want: 4))))?.code, .notRegistered)
        XCTAssertEqual(Harness.error(h.send(0, .heartbeat(Heartbeat(step: 1)), seq: 1))?.code, .outOfOrder)
        XCTAssertEqual(Harness.error(h.send(5, .registration(Registration(worldSize: 2, host: "x", pid: 1, buildVersion: ""))))?.code, .badRequest)
        XCTAssertEqual(Harness.error(h.send(0, .leaseGrant(LeaseGrant(leases: [], exhausted: false, epoch: 0))))?.code, .badRequest)
        XCTAssertEqual(Harness.error(h.send(0, .leaseReturn(LeaseReturn(leaseId: 999, consumed: 1))))?.code, .badRequest)
        XCTAssertEqual(Harness.error(h.send(1, .checkpointCommitted(CheckpointCommitted(step: 1, path: "", positions: []))))?.code, .notRegistered)
        XCTAssertEqual(Harness.error(h.send(-1, .command(Command(kind: .unspecified))))?.code, .badRequest)
        XCTAssertEqual(Harness.error(h.state.handleUndecodable(from: Harness.peer(9), reason: "junk"))?.code, .malformed)
        var noBody = Envelope(jobId: "job", authToken: "s3cret", seq: 99, rank: 0, body: nil)
        XCTAssertEqual(Harness.error(h.state.handle(noBody, from: Harness.peer(0), now: h.now))?.code, .malformed)
        noBody.protocolVersion = 2
        XCTAssertEqual(Harness.error(h.state.handle(noBody, from: Harness.peer(0), now: h.now))?.code, .unsupportedVersion)
        XCTAssertEqual(h.state.leases, snapshotLeases)
        XCTAssertEqual(h.state.durableVersion, version)
        XCTAssertEqual(h.state.droppedMessages, 13)
        XCTAssertEqual(h.state.status(now: h.now).droppedMessages, 13)
    }

    func testCorpusIndexParsesTheDataPipelineFormatAndNamesErrors() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("index.json")
        try #"{"version": 1, "format": "webdataset", "root": "/data", "shards": [{"path": "00000.tar", "samples": 3, "bytes": 10, "bad": [{"key": "k", "kind": "truncated"}]}, {"path": "00001.tar", "samples": 2, "bytes": 5, "bad": []}], "total_samples": 5, "bad_samples": 1}"#
            .write(to: url, atomically: true, encoding: .utf8)
        let index = try CorpusIndex.load(from: url)
        XCTAssertEqual(index.shards.map(\.samples), [3, 2])
        XCTAssertEqual(index.badSamples, 1)
        try #"{"version": 1, "format": "json", "root": "/d", "shards": [{"path": "a.json", "samples": 3}], "total_samples": 4, "bad_samples": 0}"#
            .write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CorpusIndex.load(from: url)) { XCTAssertTrue("\($0)".contains(url.path) && "\($0)".contains("total_samples")) }
        XCTAssertThrowsError(try CorpusIndex.load(from: dir.appendingPathComponent("missing.json"))) { XCTAssertTrue("\($0)".contains("missing.json")) }
    }
}

extension CoordinatorStateTests {
    /// A restart resumes the saved plan, takes the new token, and never writes the token to disk.
    func testRestartKeepsPlanTakesNewTokenAndNeverStoresIt() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = SnapshotStore(directory: dir)
        var h = Harness(config: config(world: 1, token: "old-secret"), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.leases(0)
        try store.save(h.state)
        let text = try String(contentsOf: store.url, encoding: .utf8)
        XCTAssertFalse(text.contains("old-secret"), "the token must not be in the snapshot")
        var warnings: [String] = []
        let resumed = try CoordinatorServer.openState(config: config(world: 1, seed: 99, token: "new-secret"), index: Fixtures.index(sizes),
                                                      store: store) { warnings.append($0) }
        XCTAssertEqual(resumed.config.seed, 7, "the saved plan wins")
        XCTAssertEqual(resumed.config.authToken, "new-secret")
        XCTAssertEqual(resumed.leases, h.state.leases)
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings.first?.contains("seed 7 vs 99") == true, "\(warnings)")
        XCTAssertThrowsError(try CoordinatorServer.openState(config: CoordinatorConfig(jobId: "other"), index: Fixtures.index(sizes), store: store))
        XCTAssertThrowsError(try CoordinatorServer.openState(config: config(world: 1), index: Fixtures.index([5]), store: store)) {
            XCTAssertTrue("\($0)".contains("corpus index changed"), "\($0)")
        }
    }
}

extension CoordinatorStateTests {
    /// Restarting with another world size resumes from the last checkpoint; 2 ranks then 3 ranks
    /// together read every sample exactly once.
    func testWorldSizeChangeResumesFromCheckpointWithExactAccounting() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = SnapshotStore(directory: dir)
        var h = Harness(config: config(world: 2, epochs: 1), index: Fixtures.index(sizes))
        _ = h.register(0)
        _ = h.register(1)
        let a = h.leases(0)!.leases, b = h.leases(1)!.leases
        h.send(0, .leaseReturn(LeaseReturn(leaseId: a[0].id, consumed: a[0].count)))
        _ = h.send(0, .checkpointCommitted(CheckpointCommitted(step: 8, path: "/ck/8", positions: [
            DataPosition(rank: 0, leaseId: a[1].id, offset: 3), DataPosition(rank: 1, leaseId: b[0].id, offset: 9)])))
        _ = h.leases(1)
        try store.save(h.state)
        var warnings: [String] = []
        var h3 = h
        h3.state = try CoordinatorServer.openState(config: config(world: 3, epochs: 1), index: Fixtures.index(sizes), store: store) { warnings.append($0) }
        XCTAssertEqual(h3.state.config.worldSize, 3)
        XCTAssertEqual(h3.state.attempt, 2)
        XCTAssertTrue(warnings.first?.contains("checkpoint step 8") == true, "\(warnings)")
        h3.seqs = [:]
        for r in 0..<3 as Range<Int32> { XCTAssertEqual(h3.register(r, pid: 700)?.resumeStep, 8) }
        XCTAssertEqual(h3.state.attempt, 2, "the new processes registering are the attempt the world-size change started")
        let rest = drain(&h3, ranks: [0, 1, 2])
        // The tail of the 2-rank plan stays the tail; the rest was re-dealt over 3 ranks.
        XCTAssertEqual(SampleRange.total(tails(h3.state, epochs: 1)), sizes.reduce(0, +) % 2)
        assertExactCover(h3.state.ledger + rest.map { $0.range() } + tails(h3.state, epochs: 1), epochs: 1)
    }
}

extension CoordinatorStateTests {
    /// The coordinator half of reliable checkpoint commits. A commit handled but not yet durable
    /// when the coordinator crashed is accepted when resent to the restarted one, even after the
    /// ranks returned more leases meanwhile, with exactly the ledger the first one produced; a
    /// duplicate of a durable commit (its acknowledgement was lost) is acknowledged and changes
    /// nothing; a stale one (a later checkpoint is committed) is refused and changes nothing.
    func testResentCheckpointCommitAfterCrashGivesTheSameLedger() throws {
        var h = Harness(config: config(world: 2, leaseSize: 10, epochs: 1, k: 2, timeout: 1e9), index: Fixtures.index(sizes))
        XCTAssertNotNil(h.register(0))
        XCTAssertNotNil(h.register(1))
        let l0 = try XCTUnwrap(h.leases(0, want: 2)?.leases)
        let l1 = try XCTUnwrap(h.leases(1, want: 2)?.leases)
        // Rank 0 finished its first lease and is 3 into the second; rank 1 is 7 into its first.
        h.send(0, .leaseReturn(LeaseReturn(leaseId: l0[0].id, consumed: l0[0].count)))
        let commit = CheckpointCommitted(step: 5, path: "/ck/5", positions: [DataPosition(rank: 0, leaseId: l0[1].id, offset: 3),
                                                                             DataPosition(rank: 1, leaseId: l1[0].id, offset: 7)])
        let durable = try JSONEncoder().encode(h.state)  // the last snapshot before the crash
        guard case .ack? = h.send(0, .checkpointCommitted(commit)).first?.envelope.body else { return XCTFail("commit refused") }
        let expected = h.state.ledger
        XCTAssertEqual(UInt64(SampleRange.total(expected)), l0[0].count + 3 + 7)

        // Crash before that commit was durable; the ranks carry on (rank 0 finishes its second
        // lease) before rank 0's resend arrives.
        h.state = try JSONDecoder().decode(CoordinatorState.self, from: durable)
        h.state.resumeAfterRestart(now: h.now)
        XCTAssertTrue(h.state.checkpoints.isEmpty)
        h.send(0, .leaseReturn(LeaseReturn(leaseId: l0[1].id, consumed: l0[1].count)))
        guard case .ack? = h.send(0, .checkpointCommitted(commit)).first?.envelope.body else { return XCTFail("resent commit refused") }
        XCTAssertEqual(h.state.checkpoints.map(\.step), [5])
        XCTAssertEqual(h.state.ledger, expected, "the resent commit commits exactly what the lost one did")
        XCTAssertEqual(h.state.leases[l0[1].id]?.committedOffset, 3, "the rest of rank 0's second lease is still to be committed")

        // Its acknowledgement was lost too: the duplicate is acknowledged, nothing changes.
        let before = h.state.checkpoints
        let version = h.state.durableVersion
        guard case .ack? = h.send(0, .checkpointCommitted(commit)).first?.envelope.body else { return XCTFail("duplicate refused") }
        XCTAssertEqual(h.state.checkpoints, before)
        XCTAssertEqual(h.state.durableVersion, version)

        // A later checkpoint, then a stale resend of step 5: refused, nothing changes.
        let later = CheckpointCommitted(step: 10, path: "/ck/10", positions: [DataPosition(rank: 0, leaseId: l0[1].id, offset: l0[1].count),
                                                                             DataPosition(rank: 1, leaseId: l1[0].id, offset: l1[0].count)])
        guard case .ack? = h.send(0, .checkpointCommitted(later)).first?.envelope.body else { return XCTFail("commit 10 refused") }
        let ledger10 = h.state.ledger
        XCTAssertEqual(UInt64(SampleRange.total(ledger10)), l0[0].count + l0[1].count + l1[0].count)
        XCTAssertEqual(Harness.error(h.send(0, .checkpointCommitted(commit)))?.code, .outOfOrder)
        XCTAssertEqual(h.state.ledger, ledger10)
        XCTAssertEqual(h.state.checkpoints.map(\.step), [5, 10])
    }
}

extension Harness {
    /// Registers `rank` as the process `pid` whose client has session `session` (a relaunched
    /// rank is a new process: new pid, new session, its envelope `seq` restarting at 1).
    mutating func register(_ rank: Int32, pid: UInt32, session: UInt64, seq: UInt64? = nil) -> RegistrationReply? {
        let out = send(rank, .registration(Registration(worldSize: state.config.worldSize, host: "h", pid: pid, buildVersion: "t", session: session)),
                       seq: seq)
        if case .registrationReply(let r)? = out.first?.envelope.body { return r }
        return nil
    }
}

extension CoordinatorStateTests {
    /// The ledger invariant: for every epoch, the committed ranges, the dropped ranges, the live
    /// leases beyond their committed prefix (up to what a returned lease used; the rest is back in
    /// its owner's queue), the planner's per-rank queues, the streams of epochs a rank has not
    /// started and the tails of epochs not closed yet partition the epoch's samples.
    func assertLedgerPartition(_ state: CoordinatorState, _ what: String, sizes: [Int]? = nil, file: StaticString = #filePath, line: UInt = #line) {
        ledgerPartition(state, what, sizes: sizes ?? self.sizes, file: file, line: line)
    }

    /// First attempt of a 2-rank job (processes with sessions 0xA0, 0xA1, reading their leases in
    /// grant order): checkpoints 5 and 10 are committed mid-lease; after checkpoint 10 both ranks
    /// return and take more leases (one return partial) and read into them, work that dies with
    /// the processes. Returns the ledger of checkpoint 10 and the lease samples read after it.
    func firstAttemptKilledAfterCheckpoint10(_ h: inout Harness) throws -> (ledger: [SampleRange], lostReads: [Int32: [SampleRange]]) {
        func r(_ l: Lease, _ a: UInt64, _ b: UInt64) -> SampleRange { l.range(from: a, to: b) }
        var lastTaken: [Int32: UInt64] = [:]
        /// The rank's next lease in grant order (what its loader takes next).
        func take(_ rank: Int32) throws -> Lease {
            let g = try XCTUnwrap(h.leases(rank, want: 2, takenThrough: lastTaken[rank, default: 0]))
            let l = try XCTUnwrap(g.leases.first { $0.id > lastTaken[rank, default: 0] })
            lastTaken[rank] = l.id
            return l
        }
        func commit(_ step: UInt64, _ positions: [DataPosition]) throws {
            let out = h.send(0, .checkpointCommitted(CheckpointCommitted(step: step, path: "/ck/\(step)", positions: positions)))
            guard case .ack? = out.first?.envelope.body else { throw XCTSkip("checkpoint \(step) refused: \(String(describing: out.first?.envelope.body))") }
        }
        XCTAssertEqual(h.register(0, pid: 100, session: 0xA0)?.resumeStep, 0)
        XCTAssertEqual(h.register(1, pid: 101, session: 0xA1)?.resumeStep, 0)
        XCTAssertEqual(h.state.jobState, .running)
        // Checkpoint 5: rank 0 finished a0 and is 3 into a1; rank 1 is 7 into b0.
        let a0 = try take(0), b0 = try take(1)
        h.send(0, .leaseReturn(LeaseReturn(leaseId: a0.id, consumed: a0.count)))
        let a1 = try take(0)
        try commit(5, [DataPosition(rank: 0, leaseId: a1.id, offset: 3), DataPosition(rank: 1, leaseId: b0.id, offset: 7)])
        // Checkpoint 10: rank 0 finished a1, is 2 into a2; rank 1 finished b0 and b1, is 5 into b2.
        h.send(0, .leaseReturn(LeaseReturn(leaseId: a1.id, consumed: a1.count)))
        let a2 = try take(0)
        h.send(1, .leaseReturn(LeaseReturn(leaseId: b0.id, consumed: b0.count)))
        let b1 = try take(1)
        h.send(1, .leaseReturn(LeaseReturn(leaseId: b1.id, consumed: b1.count)))
        let b2 = try take(1)
        try commit(10, [DataPosition(rank: 0, leaseId: a2.id, offset: 2), DataPosition(rank: 1, leaseId: b2.id, offset: 5)])
        XCTAssertEqual(h.state.checkpoints.map(\.step), [5, 10])
        let ledger10 = h.state.ledger
        XCTAssertEqual(h.state.checkpoints.last?.committedSamples, a0.count + a1.count + 2 + b0.count + b1.count + 5)
        assertLedgerPartition(h.state, "at checkpoint 10")

        // After checkpoint 10, never committed: rank 0 finishes a2 (returned) and reads 6 of a3;
        // rank 1 reads b2 up to 8 (still holding it).
        h.send(0, .leaseReturn(LeaseReturn(leaseId: a2.id, consumed: a2.count)))
        let a3 = try take(0)
        h.send(0, .heartbeat(Heartbeat(step: 13)))
        h.send(1, .heartbeat(Heartbeat(step: 13)))
        XCTAssertEqual([a2, b2].map(\.count), [10, 10], "full leases (the reads above fit)")
        XCTAssertGreaterThanOrEqual(a3.count, 6)
        // The two cases under test: a lease returned after the last checkpoint (its use since then
        // is not committed), and a lease still held with a committed prefix.
        XCTAssertEqual(h.state.leases[a2.id].map { [$0.committedOffset, $0.returnedConsumed ?? 0] }, [2, a2.count])
        XCTAssertEqual(h.state.leases[b2.id].map { [$0.committedOffset] }, [5])
        XCTAssertEqual(h.state.leases[b2.id]?.isOutstanding, true)
        assertLedgerPartition(h.state, "when the ranks die")
        return (ledger10, [0: [r(a2, 2, a2.count), r(a3, 0, 6)], 1: [r(b2, 5, 8)]])
    }

    /// The relaunched job (new processes, new sessions; rank `first` registers first) resumes
    /// from checkpoint 10, exactly once, and then reads what is left: checkpoint 10's ledger plus
    /// everything the second attempt reads is every sample exactly once, including the samples the
    /// dead ranks read after checkpoint 10.
    func relaunchResumesFromCheckpoint10(_ h: inout Harness, first: Int32, ledger10: [SampleRange], lostReads: [Int32: [SampleRange]]) throws {
        func ranges(_ leases: [Lease]) -> [SampleRange] { leases.map { $0.range() } }
        func covers(_ set: [SampleRange], _ r: SampleRange) -> Bool {
            SampleRange.merged(set).contains { $0.epoch == r.epoch && $0.shard == r.shard && $0.start <= r.start && r.end <= $0.end }
        }
        let attempt = h.state.attempt
        h.seqs = [:]  // new processes: their envelopes count from 1 again
        let second: Int32 = 1 - first
        let reply = try XCTUnwrap(h.register(first, pid: 200 + UInt32(first), session: 0xB0 + UInt64(first)))
        XCTAssertEqual(reply.resumeStep, 10, "the relaunched rank \(first) resumes from the last committed checkpoint")
        XCTAssertEqual(reply.resumeCheckpoint, "/ck/10")
        XCTAssertEqual(h.state.attempt, attempt + 1, "the relaunch starts a new attempt")
        XCTAssertEqual(h.state.checkpoints.map(\.step), [5, 10])
        XCTAssertEqual(h.state.ledger, ledger10, "the ledger is checkpoint 10's")
        XCTAssertTrue(h.state.leases.isEmpty, "every lease of the dead processes is revoked: \(h.state.leases.values.map(\.lease.id).sorted())")
        XCTAssertEqual(h.state.ranks.keys.sorted(), [first], "the dead processes are no longer ranks of the job")
        XCTAssertEqual(h.state.jobState, .waiting)
        XCTAssertEqual(h.state.status(now: h.now).step, 10)
        for (rank, reads) in lostReads {
            let queue = h.state.planner.queues[Int(rank)]
            for lost in reads { XCTAssertTrue(covers(queue, lost), "\(lost), read by dead rank \(rank) after checkpoint 10, is back in its queue: \(queue)") }
        }
        assertLedgerPartition(h.state, "after the relaunch rolled back")

        // The rank's registration resent (same session, same or later seq) changes nothing.
        let version = h.state.durableVersion
        XCTAssertEqual(h.register(first, pid: 200 + UInt32(first), session: 0xB0 + UInt64(first), seq: 1)?.resumeStep, 10)
        XCTAssertEqual(h.state.durableVersion, version, "a duplicate registration is answered without change")
        XCTAssertEqual(h.register(first, pid: 200 + UInt32(first), session: 0xB0 + UInt64(first))?.resumeStep, 10)
        XCTAssertEqual(h.state.attempt, attempt + 1, "a resent registration is not another restart")

        // The first relaunched rank already gets leases: the revoked samples, first.
        var expectedPlanner = h.state.planner
        let expectedEarly = [expectedPlanner.next(rank: Int(first)), expectedPlanner.next(rank: Int(first))].compactMap { $0 }
        let early = try XCTUnwrap(h.leases(first, want: 2)?.leases)
        XCTAssertEqual(ranges(early), expectedEarly, "the rank's queue, in plan order")
        // The revoked samples of the rank come first: its earliest lost read starts its first new lease.
        let firstLost = try XCTUnwrap(lostReads[first]?.first)
        XCTAssertTrue(covers([early[0].range()], SampleRange(epoch: firstLost.epoch, shard: firstLost.shard, start: firstLost.start, end: firstLost.start + 1)),
                      "re-issued before anything new: \(early) vs \(firstLost)")
        // The other rank registering later is part of the same restart: no second rollback (which
        // would revoke the leases just granted).
        let reply2 = try XCTUnwrap(h.register(second, pid: 200 + UInt32(second), session: 0xB0 + UInt64(second)))
        XCTAssertEqual(reply2.resumeStep, 10)
        XCTAssertEqual(h.state.attempt, attempt + 1, "one rollback per restart, however the ranks register")
        XCTAssertEqual(h.state.outstandingLeases(of: first), early)
        XCTAssertEqual(h.state.jobState, .running)
        assertLedgerPartition(h.state, "both relaunched ranks registered")

        // The second attempt reads everything left.
        for l in early { h.send(first, .leaseReturn(LeaseReturn(leaseId: l.id, consumed: l.count))) }
        let read = ranges(early) + ranges(drain(&h, ranks: [0, 1], k: 2))
        assertExactCover(ledger10 + read + tails(h.state, epochs: 1), epochs: 1)
        let overlap = SampleRange.merged(ledger10).reduce(0) { $0 + $1.count } + SampleRange.merged(read).reduce(0) { $0 + $1.count }
            - SampleRange.merged(ledger10 + read).reduce(0) { $0 + $1.count }
        XCTAssertEqual(overlap, 0, "samples committed by checkpoint 10 read again by the second attempt")
        for lost in lostReads.values.flatMap({ $0 }) { XCTAssertTrue(covers(read, lost), "\(lost), read by a dead rank after checkpoint 10, is read again") }
        XCTAssertTrue(h.state.planner.isExhausted)
        assertLedgerPartition(h.state, "second attempt drained")
    }

    /// Every rank of the job is killed (e.g. SIGKILL of mpirun) after checkpoint 10 while the
    /// coordinator keeps running, and the job is relaunched with `--resume` before the heartbeat
    /// timeout noticed: the new processes must not inherit the dead ones' leases; the job starts
    /// over from checkpoint 10 (exactly once), re-issuing everything read after it.
    func testRanksRelaunchedBeforeHeartbeatTimeoutResumeFromLastCheckpoint() throws {
        for first: Int32 in [0, 1] {
            var h = Harness(config: config(world: 2, leaseSize: 10, epochs: 1, k: 2, timeout: 10), index: Fixtures.index(sizes))
            let (ledger10, lost) = try firstAttemptKilledAfterCheckpoint10(&h)
            h.now += 3
            XCTAssertTrue(h.state.tick(now: h.now).isEmpty)
            XCTAssertEqual(h.state.jobState, .running, "within the timeout the coordinator still believes the ranks alive")
            try relaunchResumesFromCheckpoint10(&h, first: first, ledger10: ledger10, lostReads: lost)
        }
    }

    /// The same, relaunched after the heartbeat timeout declared the ranks lost (the job failed
    /// at checkpoint 10).
    func testRanksRelaunchedAfterHeartbeatTimeoutResumeFromLastCheckpoint() throws {
        for first: Int32 in [0, 1] {
            var h = Harness(config: config(world: 2, leaseSize: 10, epochs: 1, k: 2, timeout: 10), index: Fixtures.index(sizes))
            let (ledger10, lost) = try firstAttemptKilledAfterCheckpoint10(&h)
            h.now += 11
            _ = h.state.tick(now: h.now)
            XCTAssertEqual(h.state.jobState, .failed)
            XCTAssertEqual(h.state.ranks.values.map(\.health), [.lost, .lost])
            XCTAssertTrue(h.state.failureReason.contains("checkpoint step 10"), h.state.failureReason)
            try relaunchResumesFromCheckpoint10(&h, first: first, ledger10: ledger10, lostReads: lost)
        }
    }
}

extension CoordinatorStateTests {
    /// The relaunch itself dies before every rank registered (rank 0's new process took leases)
    /// and is relaunched again: a second restart from the same checkpoint, revoking the leases of
    /// the aborted attempt too.
    func testRelaunchDyingBeforeAllRanksRegisteredRestartsAgain() throws {
        var h = Harness(config: config(world: 2, leaseSize: 10, epochs: 1, k: 2, timeout: 10), index: Fixtures.index(sizes))
        let (ledger10, _) = try firstAttemptKilledAfterCheckpoint10(&h)
        h.seqs = [:]
        XCTAssertEqual(h.register(0, pid: 200, session: 0xB0)?.resumeStep, 10)
        XCTAssertEqual(h.state.attempt, 2)
        let aborted = try XCTUnwrap(h.leases(0, want: 2)?.leases)
        XCTAssertEqual(aborted.count, 2)
        h.send(0, .leaseReturn(LeaseReturn(leaseId: aborted[0].id, consumed: 4)))
        assertLedgerPartition(h.state, "aborted relaunch")
        h.seqs = [:]
        XCTAssertEqual(h.register(0, pid: 300, session: 0xC0)?.resumeStep, 10)
        XCTAssertEqual(h.state.attempt, 3, "a second relaunch is a second restart")
        XCTAssertTrue(h.state.leases.isEmpty)
        XCTAssertEqual(h.state.ledger, ledger10)
        assertLedgerPartition(h.state, "second relaunch")
        XCTAssertEqual(h.register(1, pid: 301, session: 0xC1)?.resumeStep, 10)
        XCTAssertEqual(h.state.attempt, 3)
        XCTAssertEqual(h.state.jobState, .running)
        let read = drain(&h, ranks: [0, 1], k: 2).map { $0.range() }
        assertExactCover(ledger10 + read + tails(h.state, epochs: 1), epochs: 1)
    }
}
