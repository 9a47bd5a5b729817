import CZMQ
import XCTest
@testable import Control

/// The coordinator over real ZeroMQ sockets on loopback: clients, restart, authentication.
final class LiveCoordinatorTests: XCTestCase {
    static func start(_ config: CoordinatorConfig, _ index: CorpusIndex, store: SnapshotStore? = nil,
                      bind: String = "tcp://127.0.0.1:*", curve: CurveKeyPair? = nil, allowedClients: [String]? = nil) throws -> (CoordinatorServer, Thread) {
        let state = try CoordinatorServer.openState(config: config, index: index, store: store)
        var options = CoordinatorServer.Options(bind: bind, curve: curve)
        options.allowedClients = allowedClients
        options.pollInterval = 0.01
        let server = try CoordinatorServer(state: state, store: store, options: options)
        return (server, server.startInBackground())
    }

    static func shutdown(_ server: CoordinatorServer, _ thread: Thread) {
        server.stop()
        let deadline = Date().addingTimeInterval(5)
        while !thread.isFinished && Date() < deadline { usleep(1000) }
        server.close()
    }

    /// Starts a server on a fixed endpoint, retrying while the previous owner's port is released.
    static func restart(_ config: CoordinatorConfig, _ index: CorpusIndex, store: SnapshotStore, bind: String) throws -> (CoordinatorServer, Thread) {
        let deadline = Date().addingTimeInterval(5)
        while true {
            do { return try start(config, index, store: store, bind: bind) } catch let e as ZMQError where e.errno == EADDRINUSE && Date() < deadline {
                usleep(20_000)
            }
        }
    }

    /// Polls `condition` every millisecond for up to `timeout` seconds.
    static func eventually(_ timeout: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(1000)
        }
        return condition()
    }

    func testClientsLeasesHeartbeatsCommandsAndStatus() throws {
        let config = CoordinatorConfig(jobId: "live", worldSize: 2, leaseSize: 64, epochs: 1, maxOutstanding: 3, authToken: "tok")
        let (server, thread) = try Self.start(config, Fixtures.index([1000, 500]))
        defer { Self.shutdown(server, thread) }
        let c0 = try CoordinatorClient(endpoint: server.endpoint, auth: .token("tok"), rank: 0, worldSize: 2, jobId: "live", prefetch: 3)
        let c1 = try CoordinatorClient(endpoint: server.endpoint, auth: .token("tok"), rank: 1, worldSize: 2, jobId: "live", prefetch: 3)
        defer { c0.close(); c1.close() }
        c0.register()
        c1.register()
        let l0 = try XCTUnwrap(c0.waitForLease(timeout: 5), "rank 0 got no lease")
        let l1 = try XCTUnwrap(c1.waitForLease(timeout: 5), "rank 1 got no lease")
        XCTAssertNotEqual(l0.id, l1.id)
        XCTAssertTrue(Self.eventually { c0.queuedLeases == 3 }, "K leases stay queued beyond the one being read")
        XCTAssertEqual(c0.registration?.resumeStep, 0)
        c0.sendHeartbeat(step: 5, stepSeconds: 0.5, timings: [PhaseTime(name: "forward", seconds: 0.2)])
        c1.sendHeartbeat(step: 3)
        c0.reportProgress(ProgressReport(step: 5, samples: 320, losses: Losses(ita: 1, itm: 0.5, mlm: 2, total: 3.5), samplesPerSecond: 64))
        let tool = ControlRequester(endpoint: server.endpoint, auth: .token("tok"), timeout: 3)
        XCTAssertTrue(Self.eventually { (try? tool.status()).map { $0.step == 5 && $0.ranks.map(\.step) == [5, 3] } ?? false })
        let status = try tool.status()
        XCTAssertEqual(status.jobId, "live")
        XCTAssertEqual(status.jobState, .running)
        XCTAssertEqual(status.ranks.map(\.rank), [0, 1])
        XCTAssertEqual(status.ranks.map(\.lag), [0, 2])
        XCTAssertEqual(status.losses.total, 3.5)
        XCTAssertEqual(status.ranks[0].outstandingLeases, 4)
        XCTAssertEqual(status.ranks[0].stepSeconds, 0.5)
        XCTAssertEqual(status.phases, [PhaseTime(name: "forward", seconds: 0.2)], "rank 0 reported no phases: mean of heartbeat timings")

        // checkpoint-now reaches rank 0's next poll, and only rank 0.
        let id = try tool.command(.checkpointNow)
        XCTAssertGreaterThan(id, 0)
        var got: Command?
        XCTAssertTrue(Self.eventually { got = got ?? c0.pollCommand(); return got != nil })
        XCTAssertEqual(got?.kind, .checkpointNow)
        XCTAssertNil(c1.pollCommand())
        XCTAssertNil(c0.pollCommand(), "a command is returned once")

        // Commit a checkpoint with both positions.
        c0.completeLease(l0)
        c0.commitCheckpoint(step: 10, path: "/ck/10", positions: [DataPosition(rank: 0, leaseId: l0.id, offset: l0.count),
                                                                 DataPosition(rank: 1, leaseId: l1.id, offset: 7)])
        XCTAssertTrue(Self.eventually { (try? tool.status())?.lastCheckpoint?.step == 10 })

        // Wrong token: a typed rejection, not a hang.
        XCTAssertThrowsError(try ControlRequester(endpoint: server.endpoint, auth: .token("bad"), timeout: 2).status()) {
            guard case .rejected(_, let e)? = $0 as? CoordinatorError else { return XCTFail("\($0)") }
            XCTAssertEqual(e.code, .unauthenticated)
        }
        // Stop: rank 0 sees it; once it acknowledges (next heartbeat), the job is stopped.
        _ = try tool.command(.stop)
        XCTAssertTrue(Self.eventually { c0.pollCommand()?.kind == .stop })
        c0.sendHeartbeat(step: 11)
        XCTAssertTrue(Self.eventually { (try? tool.status())?.jobState == .stopped })
    }

    func testUnreachableCoordinatorFailsFastWithAHint() {
        let start = Date()
        XCTAssertThrowsError(try ControlRequester(endpoint: "tcp://127.0.0.1:1", timeout: 0.5).status()) { error in
            XCTAssertEqual(error as? CoordinatorError, .unreachable(endpoint: "tcp://127.0.0.1:1", timeoutSeconds: 0.5))
            XCTAssertTrue("\(error)".contains("tcp://127.0.0.1:1") && "\(error)".contains("HINT"))
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 2)
    }

    /// The coordinator restarts mid-job from its snapshot; the rank keeps going and, in the end,
    /// has read every sample exactly once.
    func testCoordinatorRestartLosesNoLeaseAndNoStep() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = SnapshotStore(directory: dir)
        let sizes: [Int] = [300, 200, 77]
        let config = CoordinatorConfig(jobId: "restart", worldSize: 1, leaseSize: 25, epochs: 1, maxOutstanding: 3, authToken: "t")
        var (server, thread) = try Self.start(config, Fixtures.index(sizes), store: store)
        let endpoint = server.endpoint
        let client = try CoordinatorClient(endpoint: endpoint, auth: .token("t"), rank: 0, worldSize: 1, jobId: "restart", prefetch: 3)
        defer { client.close() }
        client.register()
        var consumed: [Lease] = []
        var step: UInt64 = 0
        func consume(_ n: Int) {
            for _ in 0..<n {
                guard let lease = client.waitForLease(timeout: 10) else { return }
                consumed.append(lease)
                step += 1
                client.sendHeartbeat(step: step)
                client.completeLease(lease)
            }
        }
        consume(5)
        client.commitCheckpoint(step: step, path: "/ck/\(step)", positions: [DataPosition(rank: 0, leaseId: consumed.last!.id, offset: consumed.last!.count)])
        consume(2)
        XCTAssertTrue(Self.eventually { server.state.checkpoints.count == 1 })
        Self.shutdown(server, thread)
        let before = try XCTUnwrap(try store.load())
        (server, thread) = try Self.restart(config, Fixtures.index(sizes), store: store, bind: endpoint)
        defer { Self.shutdown(server, thread) }
        XCTAssertEqual(server.state.nextLeaseId, before.nextLeaseId, "the restarted coordinator resumes the same job")
        consume(1000)
        XCTAssertTrue(client.isExhausted)
        let ranges = consumed.map { $0.range() }
        XCTAssertEqual(ranges.reduce(0) { $0 + $1.count }, sizes.reduce(0, +), "no sample read twice or lost")
        XCTAssertEqual(SampleRange.merged(ranges), Fixtures.everySample(sizes, epochs: 1), "world size 1: no tail, the one stream is the epoch")
        XCTAssertEqual(Set(consumed.map(\.id)).count, consumed.count)
        client.commitCheckpoint(step: step, path: "/ck/final", positions: [DataPosition(rank: 0, leaseId: consumed.last!.id, offset: consumed.last!.count)])
        XCTAssertTrue(Self.eventually { server.state.jobState == .done }, "all data committed: \(server.state.jobState) \(server.state.leases.count) leases left")
    }

    func testCurveAuthenticatedClient() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = try CurveKeyFiles.generate(into: dir)
        let config = CoordinatorConfig(jobId: "curve", worldSize: 1)
        let admitted = try CurveKeyFiles.loadServer(from: dir)
        XCTAssertEqual(admitted.allowedClients, [keys.client.publicKey])
        let (server, thread) = try Self.start(config, Fixtures.index([10]), curve: admitted.server, allowedClients: admitted.allowedClients)
        defer { Self.shutdown(server, thread) }
        let auth = ClientAuth.curve(serverKey: keys.server.publicKey, client: keys.client)
        XCTAssertEqual(try ControlRequester(endpoint: server.endpoint, auth: auth, timeout: 3).status().jobId, "curve")
        XCTAssertThrowsError(try ControlRequester(endpoint: server.endpoint, auth: .none, timeout: 0.5).status(),
                             "plain TCP cannot talk to a CURVE coordinator")
        // A well-formed CURVE client whose key was not admitted is refused by the ZAP handler.
        let stranger = ClientAuth.curve(serverKey: keys.server.publicKey, client: try CurveKeyPair.generate())
        XCTAssertThrowsError(try ControlRequester(endpoint: server.endpoint, auth: stranger, timeout: 0.5).status())
        XCTAssertGreaterThan(server.refusedConnections, 0)
        XCTAssertGreaterThan(try ControlRequester(endpoint: server.endpoint, auth: auth, timeout: 3).status().droppedMessages, 0)
    }
}

extension LiveCoordinatorTests {
    /// Dropping the last reference to a client ends its thread (no explicit close needed).
    func testClientDeinitStopsItsThread() throws {
        weak var weakClient: CoordinatorClient?
        do {
            let c = try CoordinatorClient(endpoint: "tcp://127.0.0.1:1", rank: 0, worldSize: 1, jobId: "x")
            c.register()
            c.sendHeartbeat(step: 1)
            weakClient = c
            usleep(20_000)
        }
        XCTAssertTrue(Self.eventually(2) { weakClient == nil }, "the client was not released")
    }
}

extension LiveCoordinatorTests {
    /// A second client for the same rank in the same process (new session) is accepted, and its
    /// restarted sequence numbers are not mistaken for replays. A new session is a new rank process
    /// resuming from the last committed checkpoint (here: the start), so the job starts over from
    /// it: the first session's lease is revoked and its samples re-issued to the new one.
    func testNewClientSessionInSameProcessIsAccepted() throws {
        let config = CoordinatorConfig(jobId: "sess", worldSize: 1, leaseSize: 10, maxOutstanding: 2)
        let (server, thread) = try Self.start(config, Fixtures.index([100]))
        defer { Self.shutdown(server, thread) }
        let first = try CoordinatorClient(endpoint: server.endpoint, rank: 0, worldSize: 1, jobId: "sess", prefetch: 2)
        first.register()
        let lease = try XCTUnwrap(first.waitForLease(timeout: 5))
        for step in 1...5 { first.sendHeartbeat(step: UInt64(step)) }
        XCTAssertTrue(Self.eventually { server.state.ranks[0]?.step == 5 })
        first.close()
        let second = try CoordinatorClient(endpoint: server.endpoint, rank: 0, worldSize: 1, jobId: "sess", prefetch: 2)
        defer { second.close() }
        second.register()
        let again = try XCTUnwrap(second.waitForLease(timeout: 5))
        XCTAssertGreaterThan(again.id, lease.id, "a new lease")
        XCTAssertEqual([again.shard, UInt32(again.start), UInt32(again.end)], [lease.shard, UInt32(lease.start), UInt32(lease.end)],
                       "the new session receives the first session's uncommitted samples")
        XCTAssertEqual(server.state.attempt, 2, "a new attempt from the start")
        second.sendHeartbeat(step: 6)
        XCTAssertTrue(Self.eventually { server.state.ranks[0]?.step == 6 }, "heartbeats of the new session are not dropped as replays")
        XCTAssertNil(second.lastError)
    }
}

extension LiveCoordinatorTests {
    /// Write-ahead rule: a grant leaves only after its state is on disk. With an unwritable state
    /// directory no lease is ever sent, the coordinator stops with the error, and status (which
    /// changes nothing) was still answered meanwhile.
    func testRepliesWaitForDurableSnapshot() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let blocker = dir.appendingPathComponent("not-a-dir")
        try Data("x".utf8).write(to: blocker)
        let store = SnapshotStore(directory: blocker.appendingPathComponent("state"))
        let config = CoordinatorConfig(jobId: "wal", worldSize: 1, leaseSize: 10)
        let state = CoordinatorState(config: config, index: Fixtures.index([100]))
        var options = CoordinatorServer.Options(bind: "tcp://127.0.0.1:*")
        options.pollInterval = 0.01
        let server = try CoordinatorServer(state: state, store: store, options: options)
        let ctx = try ZMQContext()
        let rank = try ZMQSocket(context: ctx, kind: .dealer)
        try rank.connect(server.endpoint)
        let tool = try ZMQSocket(context: ctx, kind: .dealer)
        try tool.connect(server.endpoint)
        // Status first: answered while nothing needs to be durable.
        try tool.send([Envelope(seq: 1, rank: -1, body: .statusRequest).encoded()])
        var answered = false
        for _ in 0..<300 where !answered {
            try server.turn()
            answered = try tool.waitReadable(timeoutMs: 0)
        }
        XCTAssertTrue(answered, "status is answered without durability")
        // A registration is a durable change: its snapshot fails, so the reply never leaves.
        try rank.send([Envelope(jobId: "wal", seq: 1, rank: 0, body: .registration(Registration(worldSize: 1, host: "h", pid: 1, buildVersion: ""))).encoded()])
        var failure: Error?
        for _ in 0..<300 {
            do { try server.turn() } catch { failure = error; break }
        }
        XCTAssertNotNil(failure as? CoordinatorError, "the snapshot failure stops the coordinator: \(String(describing: failure))")
        XCTAssertEqual(server.state.ranks.count, 1, "the registration was handled")
        XCTAssertFalse(try rank.waitReadable(timeoutMs: 100), "the registration reply must not leave before it is durable")
        server.close()
    }
}

extension LiveCoordinatorTests {
    /// Two ranks read through `LeaseCursor`, checkpoint mid-lease, the job fails, a new attempt
    /// resumes: samples read before the checkpoint plus samples read after the restart are every
    /// sample exactly once.
    func testLeaseCursorPositionsGiveExactResume() throws {
        let sizes: [Int] = [130, 70, 45]
        let config = CoordinatorConfig(jobId: "cursor", worldSize: 2, leaseSize: 20, epochs: 1, maxOutstanding: 2, heartbeatTimeout: 60)
        let (server, thread) = try Self.start(config, Fixtures.index(sizes))
        defer { Self.shutdown(server, thread) }
        func takeAll(_ cursor: LeaseCursor, _ n: Int) -> [SampleRef] {
            var got: [SampleRef] = []
            let deadline = Date().addingTimeInterval(10)
            while got.count < n && Date() < deadline && !cursor.isExhausted {
                let more = cursor.take(n - got.count)
                if more.isEmpty { usleep(1000) }
                got += more
            }
            return got
        }
        // Attempt 1: each rank reads 47 samples (ends mid-lease), rank 0 commits both positions,
        // then reads 13 more that the checkpoint does not cover.
        var kept: [SampleRef] = []
        do {
            let clients = try (0..<2).map { try CoordinatorClient(endpoint: server.endpoint, rank: Int32($0), worldSize: 2, jobId: "cursor", prefetch: 2) }
            defer { clients.forEach { $0.close() } }
            clients.forEach { $0.register() }
            let cursors = clients.map(LeaseCursor.init)
            for c in cursors { kept += takeAll(c, 47) }
            XCTAssertEqual(kept.count, 94)
            clients[0].commitCheckpoint(step: 3, path: "/ck/3", positions: cursors.map(\.position))
            XCTAssertTrue(Self.eventually { server.state.checkpoints.count == 1 })
            for c in cursors { _ = takeAll(c, 13) }  // lost with the failed attempt
        }
        // The coordinator restarts the job from step 3 (as after a lost rank).
        server.mutateState { $0.rollback() }
        // Attempt 2: each rank reads what is left of its own stream (a rank only ever gets leases
        // of its stream, so both must read for the epoch to be complete).
        let clients = try (0..<2).map { try CoordinatorClient(endpoint: server.endpoint, rank: Int32($0), worldSize: 2, jobId: "cursor", prefetch: 2) }
        defer { clients.forEach { $0.close() } }
        clients.forEach { $0.register() }
        XCTAssertTrue(Self.eventually { clients.allSatisfy { $0.registration?.resumeStep == 3 } })
        var rest: [SampleRef] = []
        for c in clients { rest += takeAll(LeaseCursor(client: c), 10_000) }
        let all = kept + rest
        // 245 samples over 2 ranks: streams of 122, the last sample is the epoch's tail.
        let tail = server.state.planner.tail(epoch: 0)
        XCTAssertEqual(SampleRange.total(tail), 1)
        XCTAssertEqual(all.count, sizes.reduce(0, +) - 1, "every sample of the two streams exactly once")
        XCTAssertEqual(Set(all.map { "\($0.shard)/\($0.index)" }).count, all.count, "no duplicates")
        let tailRefs = Set(tail.flatMap { t in (t.start..<t.end).map { "\(t.shard)/\($0)" } })
        XCTAssertTrue(Set(all.map { "\($0.shard)/\($0.index)" }).isDisjoint(with: tailRefs), "the tail is nobody's")
    }
}

extension LiveCoordinatorTests {
    /// A rank that returns its leases only when a checkpoint settles them never starves: leases
    /// it has taken do not use up its prefetch; the checkpoint then frees them.
    func testTakenLeasesDoNotStarveARankBetweenCheckpoints() throws {
        let config = CoordinatorConfig(jobId: "taken", worldSize: 1, leaseSize: 10, maxOutstanding: 2)
        let (server, thread) = try Self.start(config, Fixtures.index([1000]))
        defer { Self.shutdown(server, thread) }
        let client = try CoordinatorClient(endpoint: server.endpoint, rank: 0, worldSize: 1, jobId: "taken", prefetch: 2)
        defer { client.close() }
        client.register()
        var taken: [Lease] = []
        for _ in 0..<12 {
            guard let lease = client.waitForLease(timeout: 5) else { return XCTFail("starved after \(taken.count) leases") }
            taken.append(lease)
        }
        XCTAssertEqual(taken.map(\.id), Array(taken[0].id..<(taken[0].id + 12)))
        XCTAssertTrue(Self.eventually { server.state.outstandingLeases(of: 0).count == 14 }, "12 taken + 2 queued")
        let last = try XCTUnwrap(taken.last)
        client.commitCheckpoint(step: 1, path: "/ck/1", positions: [DataPosition(rank: 0, leaseId: last.id, offset: 4)])
        XCTAssertTrue(Self.eventually { server.state.checkpoints.count == 1 })
        XCTAssertEqual(server.state.ledger, [taken[0].range(from: 0, to: 114)], "11 leases of 10 and 4 of the 12th, contiguous")
        XCTAssertEqual(server.state.outstandingLeases(of: 0).count, 3, "the half-read lease and the 2 queued")
    }
}

extension LiveCoordinatorTests {
    /// A checkpoint commit the coordinator handled but had not yet made durable when it crashed
    /// reaches the restarted coordinator: the client resends it until acknowledged. And `close()`
    /// returns only once the last commit is acknowledged (the final checkpoint is never dropped
    /// with the socket).
    func testCheckpointCommitLostInACrashIsResentAndCloseWaitsForTheAck() throws {
        let dir = Fixtures.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = SnapshotStore(directory: dir)
        let config = CoordinatorConfig(jobId: "commit", worldSize: 1, leaseSize: 10, epochs: 1, maxOutstanding: 2, heartbeatTimeout: 60)
        let index = Fixtures.index([200])
        // First coordinator: after the registration, snapshots wait an hour (so the commit below
        // is handled but never durable).
        var options = CoordinatorServer.Options(bind: "tcp://127.0.0.1:*")
        options.pollInterval = 0.01
        options.minSnapshotInterval = 3600
        let first = try CoordinatorServer(state: try CoordinatorServer.openState(config: config, index: index, store: store),
                                          store: store, options: options)
        let firstThread = first.startInBackground()
        let endpoint = first.endpoint
        let client = try CoordinatorClient(endpoint: endpoint, rank: 0, worldSize: 1, jobId: "commit", prefetch: 2)
        defer { client.close(commitTimeout: 0) }
        client.commitRetryInterval = 0.2
        client.register()
        XCTAssertTrue(Self.eventually { client.registration != nil }, "registered (its snapshot is the first write)")
        client.commitCheckpoint(step: 1, path: "/ck/1", positions: [DataPosition(rank: 0, leaseId: 0, offset: 0)])
        XCTAssertTrue(Self.eventually { first.state.checkpoints.count == 1 }, "the commit was handled")
        usleep(300_000)
        XCTAssertEqual(client.pendingCheckpointCommits, 1, "not acknowledged: not durable")
        XCTAssertNil(client.acknowledgedCheckpointStep, "nothing acknowledged: no checkpoint may be pruned yet")
        first.simulateCrash()
        XCTAssertTrue(Self.eventually { firstThread.isFinished })
        first.close()
        XCTAssertEqual(try store.load()?.checkpoints.count, 0, "the crash lost the commit")

        let (second, secondThread) = try Self.restart(config, index, store: store, bind: endpoint)
        defer { Self.shutdown(second, secondThread) }
        XCTAssertTrue(Self.eventually(10) { client.pendingCheckpointCommits == 0 }, "the commit was resent and acknowledged")
        XCTAssertEqual(second.state.checkpoints.map(\.step), [1])
        XCTAssertEqual(try store.load()?.checkpoints.map(\.step), [1], "and is durable")
        XCTAssertNil(client.lastError)
        XCTAssertEqual(client.acknowledgedCheckpointStep, 1)

        // The final commit, then close at once: close waits for its acknowledgement.
        client.commitCheckpoint(step: 2, path: "/ck/2", positions: [DataPosition(rank: 0, leaseId: 0, offset: 0)])
        client.close()
        XCTAssertEqual(client.pendingCheckpointCommits, 0)
        XCTAssertEqual(second.state.checkpoints.map(\.step), [1, 2])
        XCTAssertEqual(client.acknowledgedCheckpointStep, 2)
    }
}
