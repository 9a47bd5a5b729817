import XCTest
@testable import Control

/// Randomised model test of exact accounting: ranks consume leases (fully or partly), checkpoints
/// commit their positions, the coordinator is restarted from snapshots and the job rolled back at
/// random; at the end, the committed ledger is every sample of every epoch exactly once and equals
/// what the surviving timeline of the ranks actually trained on.
final class LedgerPropertyTests: XCTestCase {
    /// What one rank process knows.
    struct RankModel {
        var queue: [Lease] = []
        var current: Lease?
        var offset: UInt64 = 0
        var highest: UInt64 = 0
        var finished: (id: UInt64, offset: UInt64)?
        var trainedSinceCommit: [SampleRange] = []
        var pid: UInt32
        var takenThrough: UInt64 = 0

        var position: (UInt64, UInt64) {
            if let current { return (current.id, offset) }
            if let finished { return (finished.id, finished.offset) }
            return (0, 0)
        }
    }

    func run(seed: UInt64, world: Int32, sizes: [Int], epochs: UInt32, detailedCheckpoints: Int? = nil) throws -> Int {
        var rng = FuzzRNG(state: seed)
        let config = CoordinatorConfig(jobId: "prop", worldSize: UInt32(world), seed: seed, leaseSize: 16, epochs: epochs,
                                       maxOutstanding: 3, heartbeatTimeout: 1e9)
        var h = Harness(config: config, index: Fixtures.index(sizes))
        h.state.detailedCheckpoints = detailedCheckpoints
        var ranks = (0..<world).map { RankModel(pid: UInt32(100 + $0)) }
        var committedTrained: [SampleRange] = []
        var step: UInt64 = 0
        func register(_ r: Int32) {
            XCTAssertNotNil(h.register(r, pid: ranks[Int(r)].pid), "rank \(r) registers")
        }
        func fill(_ r: Int32) {
            // Half the runs say which leases they have taken (prefetch beyond them), half do not.
            let taken = seed % 2 == 0 ? ranks[Int(r)].takenThrough : 0
            guard let g = h.leases(r, want: 3, takenThrough: taken) else { return XCTFail("no grant for rank \(r)") }
            for l in g.leases where l.id > ranks[Int(r)].highest {
                ranks[Int(r)].queue.append(l)
                ranks[Int(r)].highest = l.id
            }
        }
        func consume(_ r: Int32, _ n: UInt64) {
            var left = n
            while left > 0 {
                if ranks[Int(r)].current == nil {
                    if ranks[Int(r)].queue.isEmpty { fill(r) }
                    guard !ranks[Int(r)].queue.isEmpty else { return }
                    ranks[Int(r)].current = ranks[Int(r)].queue.removeFirst()
                    ranks[Int(r)].takenThrough = ranks[Int(r)].current?.id ?? 0
                    ranks[Int(r)].offset = 0
                }
                guard let l = ranks[Int(r)].current else { return }
                let k = min(left, l.count - ranks[Int(r)].offset)
                ranks[Int(r)].trainedSinceCommit.append(l.range(from: ranks[Int(r)].offset, to: ranks[Int(r)].offset + k))
                ranks[Int(r)].offset += k
                left -= k
                if ranks[Int(r)].offset == l.count { finishCurrent(r) }
            }
        }
        func finishCurrent(_ r: Int32) {
            guard let l = ranks[Int(r)].current else { return }
            let used = ranks[Int(r)].offset
            h.send(r, .leaseReturn(LeaseReturn(leaseId: l.id, consumed: used)))
            ranks[Int(r)].finished = (l.id, used)
            ranks[Int(r)].current = nil
        }
        var closes = 0
        /// Commits every rank's position; `epochsDone` > the job's closes the epochs before it (the
        /// ranks agreed their end): what is left of them is dropped, and the ranks skip it.
        func commit(epochsDone: Int? = nil) {
            let done = epochsDone ?? h.state.epochsDone
            step += 1
            let positions = (0..<world).map { r -> DataPosition in
                let p = ranks[Int(r)].position
                return DataPosition(rank: r, leaseId: p.0, offset: p.1)
            }
            let out = h.send(0, .checkpointCommitted(CheckpointCommitted(step: step, path: "/ck/\(step)", positions: positions,
                                                                         epochsDone: UInt32(done))))
            guard case .ack? = out.first?.envelope.body else { return XCTFail("commit refused: \(String(describing: out.first?.envelope.body))") }
            XCTAssertEqual(h.state.epochsDone, done, "seed \(seed)")
            for r in 0..<Int(world) {
                committedTrained += ranks[r].trainedSinceCommit
                ranks[r].trainedSinceCommit = []
                // The closed epochs' leases are gone: the rank moves on to the next epoch.
                if let c = ranks[r].current, Int(c.epoch) < done {
                    ranks[r].finished = (c.id, ranks[r].offset)
                    ranks[r].current = nil
                }
                ranks[r].queue.removeAll { Int($0.epoch) < done }
            }
            XCTAssertTrue(h.state.leases.values.allSatisfy { Int($0.lease.epoch) >= done }, "seed \(seed): closed epochs hold no lease")
            ledgerPartition(h.state, "seed \(seed) after commit \(step)", sizes: sizes)
        }

        for r in 0..<world { register(r) }
        for _ in 0..<400 {
            let r = Int32(rng.next() % UInt64(world))
            switch rng.next() % 100 {
            case 0..<60: consume(r, 1 + rng.next() % 40)
            case 60..<68: fill(r)
            case 68..<74:  // give back the rest of the current lease
                if let l = ranks[Int(r)].current, ranks[Int(r)].offset < l.count { finishCurrent(r) }
            case 74..<84: commit()
            case 84..<86:  // an epoch-end checkpoint (never the last epoch: that is the final one below)
                if h.state.epochsDone + 1 < Int(epochs) { closes += 1; commit(epochsDone: h.state.epochsDone + 1) } else { commit() }
            case 86..<90:  // the job fails: new attempt from the last checkpoint, fresh rank processes
                h.state.rollback()
                for i in 0..<Int(world) {
                    ranks[i] = RankModel(pid: ranks[i].pid + 1000)
                }
                h.seqs = [:]
                for r in 0..<world { register(r) }
                ledgerPartition(h.state, "seed \(seed) after a rollback", sizes: sizes)
            case 90..<96:  // the coordinator restarts from its snapshot; ranks carry on
                let data = try JSONEncoder().encode(h.state)
                h.state = try JSONDecoder().decode(CoordinatorState.self, from: data)
                h.state.resumeAfterRestart(now: h.now)
            default:
                h.send(r, .heartbeat(Heartbeat(step: step)))
            }
        }
        // Finish: every rank reads until nothing is left, then a final checkpoint.
        var progress = true
        while progress {
            progress = false
            for r in 0..<world {
                let before = ranks[Int(r)].trainedSinceCommit.count
                consume(r, 1000)
                if ranks[Int(r)].trainedSinceCommit.count != before { progress = true }
            }
        }
        // The final checkpoint ends the last epoch: what is left (the tails) is dropped.
        commit(epochsDone: Int(epochs))

        let total = sizes.reduce(0, +) * Int(epochs)
        let full = Fixtures.everySample(sizes, epochs: Int(epochs))
        let trained = SampleRange.total(committedTrained)
        XCTAssertEqual(SampleRange.total(SampleRange.merged(committedTrained)), trained, "seed \(seed): a sample trained twice")
        XCTAssertEqual(SampleRange.merged(committedTrained), h.state.ledger, "seed \(seed): the ledger is what was trained")
        XCTAssertEqual(trained + SampleRange.total(h.state.dropped), total, "seed \(seed): trained + dropped (overlap or loss)")
        XCTAssertEqual(SampleRange.merged(h.state.ledger + h.state.dropped), full, "seed \(seed): coverage of trained ∪ dropped")
        if closes == 0 {
            // No early close: the ranks read their whole streams, only the tails are dropped.
            XCTAssertEqual(h.state.dropped, SampleRange.merged((0..<Int(epochs)).flatMap { h.state.planner.tail(epoch: $0) }), "seed \(seed)")
        }
        XCTAssertEqual(SampleRange.total((h.state.folded?.ranges ?? []) + h.state.checkpoints.flatMap(\.ranges)), trained,
                       "seed \(seed): checkpoints never overlap")
        XCTAssertEqual(Int(h.state.status(now: h.now).droppedSamples), SampleRange.total(h.state.dropped))
        XCTAssertEqual(h.state.status(now: h.now).epochsDone, epochs)
        XCTAssertLessThanOrEqual(h.state.checkpoints.count, h.state.detailedCheckpointLimit)
        if Int(step) > h.state.detailedCheckpointLimit { XCTAssertNotNil(h.state.folded, "seed \(seed): \(step) commits, some folded") }
        XCTAssertEqual((h.state.folded?.count ?? 0) + h.state.checkpoints.count, Int(step), "seed \(seed): every commit is kept or folded")
        XCTAssertEqual(h.state.jobState, .done, "seed \(seed)")
        return closes
    }

    func testRandomisedRunsAccountForEverySampleExactlyOnce() throws {
        var closes = 0
        for seed: UInt64 in 1...12 {
            closes += try run(seed: seed, world: Int32(1 + seed % 4), sizes: [90, 0, 33, 120, 7], epochs: 2)
        }
        XCTAssertGreaterThan(closes, 0, "some runs closed epoch 0 early")
    }

    /// The same with only the 2 newest checkpoints kept in detail (older ones folded into one
    /// record): rollbacks, restarts from snapshots and the final ledger are still exact.
    func testFoldingOldCheckpointsKeepsAccountingExact() throws {
        var closes = 0
        for seed: UInt64 in 21...32 {
            closes += try run(seed: seed, world: Int32(1 + seed % 4), sizes: [90, 0, 33, 120, 7], epochs: 2, detailedCheckpoints: 2)
        }
        XCTAssertGreaterThan(closes, 0, "some runs closed epoch 0 early")
    }
}
