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
    let sizes: [UInt64] = [300, 0, 1000, 257, 1, 513]

    func config(world: UInt32, leaseSize: UInt64 = 100, epochs: UInt32 = 2, k: UInt32 = 3, seed: UInt64 = 7,
                timeout: Double = 10, token: String? = nil) -> CoordinatorConfig {
        CoordinatorConfig(jobId: "job", worldSize: world, seed: seed, leaseSize: leaseSize, epochs: epochs,
                          maxOutstanding: k, heartbeatTimeout: timeout, authToken: token)
    }

    /// Runs every rank round-robin (take the oldest lease, use it fully, return it) until the plan
    /// is exhausted; returns the leases in the order they were consumed.
    func drain(_ h: inout Harness, ranks: [Int32], k: UInt32 = 3) -> [Lease] {
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
                h.send(r, .leaseReturn(LeaseReturn(leaseId: lease.id, consumed: lease.count)))
            }
        }
        return consumed
    }

    func assertExactCover(_ ranges: [SampleRange], epochs: UInt32, file: StaticString = #filePath, line: UInt = #line) {
        let total = sizes.reduce(0, +) * UInt64(epochs)
        XCTAssertEqual(ranges.reduce(0) { $0 + $1.count }, total, "sample count (duplicates or losses)", file: file, line: line)
        var expected: [SampleRange] = []
        for e in 0..<epochs {
            for (s, n) in sizes.enumerated() where n > 0 { expected.append(SampleRange(epoch: e, shard: UInt32(s), start: 0, end: n)) }
        }
        XCTAssertEqual(SampleRange.merged(ranges), expected, "coverage", file: file, line: line)
    }

    func testLeasePlanCoversEveryEpochSampleExactlyOnceFor1_2_3_7Ranks() {
        for world in [1, 2, 3, 7] as [UInt32] {
            var h = Harness(config: config(world: world), index: Fixtures.index(sizes))
            let ranks = (0..<Int32(world)).map { $0 }
            for r in ranks { XCTAssertNotNil(h.register(r)) }
            XCTAssertEqual(h.state.jobState, .running)
            let consumed = drain(&h, ranks: ranks)
            assertExactCover(consumed.map { SampleRange(epoch: $0.epoch, shard: $0.shard, start: $0.start, end: $0.end) }, epochs: 2)
            XCTAssertTrue(h.state.planner.isExhausted)
            if world > 1 {
                XCTAssertGreaterThan(Set(consumed.filter { $0.shard == 2 && $0.epoch == 0 }.map(\.id)).count, 1, "a big shard is shared")
            }
        }
    }

    func testEpochPlanIsSeededAndDeterministic() {
        let a = LeasePlanner.shardOrder(epoch: 0, seed: 7, shardCount: 50)
        XCTAssertEqual(a, LeasePlanner.shardOrder(epoch: 0, seed: 7, shardCount: 50))
        XCTAssertEqual(a.sorted(), Array(0..<50))
        XCTAssertNotEqual(a, LeasePlanner.shardOrder(epoch: 1, seed: 7, shardCount: 50), "epochs are reshuffled")
        XCTAssertNotEqual(a, LeasePlanner.shardOrder(epoch: 0, seed: 8, shardCount: 50), "the seed matters")
        var p1 = LeasePlanner(shardSamples: sizes, seed: 3, leaseSize: 64, epochs: 2)
        var p2 = p1
        for _ in 0..<20 { XCTAssertEqual(p1.next(), p2.next()) }
    }

    func testPartialReturnReissuesTheRest() {
        var h = Harness(config: config(world: 1, epochs: 1, k: 1), index: Fixtures.index([250]))
        _ = h.register(0)
        let first = h.leases(0, want: 1)!.leases[0]
        XCTAssertEqual(first.count, 100)
        let out = h.send(0, .leaseReturn(LeaseReturn(leaseId: first.id, consumed: 30)))
        guard case .leaseGrant(let g)? = out.first?.envelope.body else { return XCTFail("a return answers with a grant") }
        XCTAssertEqual(g.leases.map { [$0.start, $0.end] }, [[first.start + 30, first.end]], "the unused part comes back first")
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
        func r(_ l: Lease, _ a: UInt64, _ b: UInt64) -> SampleRange { SampleRange(epoch: l.epoch, shard: l.shard, start: l.start + a, end: l.start + b) }
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
        assertExactCover(h2.state.ledger + rest.map { SampleRange(epoch: $0.epoch, shard: $0.shard, start: $0.start, end: $0.end) }, epochs: 1)
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
        // A rank re-registering after the restart keeps its leases.
        _ = restarted.register(1)
        XCTAssertEqual(restarted.state.outstandingLeases(of: 1), before1)
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
        let rest = drain(&h3, ranks: [0, 1, 2])
        assertExactCover(h3.state.ledger + rest.map { SampleRange(epoch: $0.epoch, shard: $0.shard, start: $0.start, end: $0.end) }, epochs: 1)
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
        XCTAssertEqual(expected.reduce(0) { $0 + $1.count }, l0[0].count + 3 + 7)

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
        XCTAssertEqual(ledger10.reduce(0) { $0 + $1.count }, l0[0].count + l0[1].count + l1[0].count)
        XCTAssertEqual(Harness.error(h.send(0, .checkpointCommitted(commit)))?.code, .outOfOrder)
        XCTAssertEqual(h.state.ledger, ledger10)
        XCTAssertEqual(h.state.checkpoints.map(\.step), [5, 10])
    }
}
