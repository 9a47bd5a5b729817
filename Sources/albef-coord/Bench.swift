import ArgumentParser
import Control
import Foundation

/// Hidden load test used by `scripts/bench-coord`: an in-process coordinator on loopback, N
/// simulated ranks (one thread, one DEALER each) sending heartbeats, lease requests and returns,
/// and a tool asking for status in a loop to measure latency.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmark the coordinator (simulated ranks).",
                                                    shouldDisplay: false)
    @Option var ranks = 256
    @Option var seconds = 5.0
    @Option(help: "Offered load (messages/s) while measuring status latency.")
    var rate = 5000.0
    @Option(name: .customLong("state-dir"), help: "Snapshot directory (default: a temp dir).")
    var stateDir: String?

    func run() throws {
        let dir = stateDir.map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("albef-coord-bench-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        let index = CorpusIndex(root: "/bench", shards: (0..<1000).map { CorpusIndex.Shard(path: String(format: "%05d.tar", $0), samples: 10_000) })
        let config = CoordinatorConfig(jobId: "bench", worldSize: UInt32(ranks), leaseSize: 256, epochs: 1,
                                       maxOutstanding: 4, heartbeatTimeout: 60, authToken: "t")
        let latencies = LatencyBox()
        var options = CoordinatorServer.Options(bind: "tcp://127.0.0.1:*")
        options.onStatusAnswered = { seq, received, sent in latencies.serverSide(seq: seq, received: received, sent: sent) }
        let server = try CoordinatorServer(state: CoordinatorState(config: config, index: index),
                                           store: SnapshotStore(directory: dir), options: options)
        let serverThread = server.startInBackground()
        defer {
            // Let the last snapshot land before the directory goes.
            server.stop()
            while !serverThread.isFinished { usleep(1000) }
            try? FileManager.default.removeItem(at: dir)
        }

        let context = try ZMQContext()
        var sockets: [ZMQSocket] = []
        for _ in 0..<ranks {
            let s = try ZMQSocket(context: context, kind: .dealer)
            try s.connect(server.endpoint)
            sockets.append(s)
        }
        var seqs = [UInt64](repeating: 0, count: ranks)
        var held = [[Lease]](repeating: [], count: ranks)
        var lastReturned = [(id: UInt64, count: UInt64)](repeating: (0, 0), count: ranks)
        func send(_ r: Int, _ body: Body) throws {
            seqs[r] += 1
            let env = Envelope(jobId: "bench", authToken: "t", seq: seqs[r], rank: Int32(r), body: body)
            try sockets[r].send([env.encoded()], dontWait: true)
        }
        func drain() throws {
            for r in 0..<ranks {
                while let frames = try sockets[r].receive(dontWait: true), let payload = frames.last {
                    if case .leaseGrant(let g)? = try Envelope(decoding: payload).body {
                        held[r] = g.leases.filter { $0.id > lastReturned[r].id }
                    }
                }
            }
        }
        for r in 0..<ranks { try send(r, .registration(Registration(worldSize: UInt32(ranks), host: "bench", pid: UInt32(r), buildVersion: "bench"))) }
        Thread.sleep(forTimeInterval: 0.3)
        try drain()

        // Phase 1: saturation (every rank as fast as the loop goes) -> messages/s.
        // Phase 2: a paced heavy load (`--rate` messages/s over all ranks) while a tool asks for
        // status on its own connection every 10 ms -> status latency.
        var round: UInt64 = 0
        func sendRound() throws {
            round += 1
            for r in 0..<ranks {
                try send(r, .heartbeat(Heartbeat(step: round, stepSeconds: 0.1)))
                if round % 4 == UInt64(r % 4) {
                    if let lease = held[r].first {
                        try send(r, .leaseReturn(LeaseReturn(leaseId: lease.id, consumed: lease.count)))
                        held[r].removeFirst()
                        lastReturned[r] = (lease.id, lease.count)
                    } else {
                        try send(r, .leaseRequest(LeaseRequest(want: 4)))
                    }
                }
            }
            // Rank 0 commits a checkpoint with every rank's position twice a second.
            if Date().timeIntervalSince(lastCommit) >= 0.5 {
                lastCommit = Date()
                let positions = (0..<ranks).map { DataPosition(rank: Int32($0), leaseId: lastReturned[$0].id, offset: lastReturned[$0].count) }
                try send(0, .checkpointCommitted(CheckpointCommitted(step: round, path: "/bench/\(round)", positions: positions)))
            }
        }
        var lastCommit = Date()
        let saturation = seconds / 2
        var start = Date()
        let framesBefore = server.framesHandled
        while Date().timeIntervalSince(start) < saturation {
            try sendRound()
            try drain()
            Thread.sleep(forTimeInterval: 0.001)
        }
        let elapsed = Date().timeIntervalSince(start)
        let frames = server.framesHandled - framesBefore
        let msgs = Double(frames) / elapsed
        // Let the backlog of phase 1 drain before measuring latency.
        var last = server.framesHandled
        repeat {
            last = server.framesHandled
            Thread.sleep(forTimeInterval: 0.2)
            try drain()
        } while server.framesHandled != last

        let endpoint = server.endpoint
        let probe = Thread {
            guard let probeContext = try? ZMQContext(), let socket = try? ZMQSocket(context: probeContext, kind: .dealer),
                  (try? socket.connect(endpoint)) != nil else { return }
            while !latencies.done {
                // The send time as the (increasing) sequence number: the server's records of
                // when it received and answered `seq` then split the round trip.
                let t0 = DispatchTime.now().uptimeNanoseconds
                let seq = t0
                let env = Envelope(jobId: "bench", authToken: "t", seq: seq, rank: -1, body: .statusRequest)
                guard (try? socket.send([env.encoded()])) == true else { break }
                while (try? socket.waitReadable(timeoutMs: 3000)) == true, let frames = try? socket.receive(dontWait: true) {
                    if let reply = frames.last.flatMap({ try? Envelope(decoding: $0) }), reply.replyTo == seq {
                        latencies.add(seq: seq, received: DispatchTime.now().uptimeNanoseconds)
                        break
                    }
                }
                Thread.sleep(forTimeInterval: 0.01)
            }
        }
        probe.start()
        let perRound = Double(ranks) * 1.25
        let interval = perRound / rate
        start = Date()
        let pacedBefore = server.framesHandled
        var next = Date()
        while Date().timeIntervalSince(start) < seconds - saturation {
            try sendRound()
            try drain()
            next = next.addingTimeInterval(interval)
            let wait = next.timeIntervalSinceNow
            if wait > 0 { Thread.sleep(forTimeInterval: wait) }
        }
        let pacedRate = Double(server.framesHandled - pacedBefore) / Date().timeIntervalSince(start)
        latencies.done = true
        while !probe.isFinished { usleep(1000) }
        let probes = latencies.probes
        func pct(_ v: [Double], _ p: Double) -> Double {
            let sorted = v.sorted()
            return sorted.isEmpty ? -1 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        let sorted = probes.map(\.total)
        func pct(_ p: Double) -> Double { pct(sorted, p) }
        let final = server.state
        print(String(format: "bench: %d ranks; saturation: %llu frames in %.1f s; paced load: %.0f msgs/s with %d status probes; %d checkpoints, %d live leases, %llu rejected",
                     ranks, frames, elapsed, pacedRate, sorted.count, final.checkpoints.count, final.leases.count, final.droppedMessages))
        // Where a status round trip goes: to the coordinator's loop (client and server ZeroMQ I/O
        // threads, TCP, waiting for the loop), inside the loop (state → reply → ZeroMQ), back.
        let parts = [("to_loop", probes.compactMap(\.toLoop)), ("in_loop", probes.compactMap(\.inLoop)), ("back", probes.compactMap(\.back))]
        print("bench: status p50/p99/max ms: " + parts.map { String(format: "%@ %.2f/%.2f/%.2f", $0.0, pct($0.1, 0.5), pct($0.1, 0.99), $0.1.max() ?? -1) }.joined(separator: ", "))
        print(String(format: "coord: msgs_s=%.0f status_p50_ms=%.2f status_p99_ms=%.2f", msgs, pct(0.5), pct(0.99)))
    }
}

/// Status round trips collected by the probe thread, with the server's side of each.
final class LatencyBox: @unchecked Sendable {
    struct Probe {
        var total: Double
        var toLoop: Double?, inLoop: Double?, back: Double?
    }
    private let lock = NSLock()
    private var client: [(sent: UInt64, received: UInt64)] = []
    private var server: [UInt64: (UInt64, UInt64)] = [:]
    private var _done = false
    var done: Bool {
        get { lock.withLock { _done } }
        set { lock.withLock { _done = newValue } }
    }
    /// The server received status request `seq` and handed its reply to ZeroMQ (loop thread).
    func serverSide(seq: UInt64, received: UInt64, sent: UInt64) {
        lock.withLock { server[seq] = (received, sent) }
    }
    /// The reply to the request sent at `seq` (ns) arrived at `received` (ns).
    func add(seq: UInt64, received: UInt64) {
        lock.withLock { client.append((seq, received)) }
    }
    /// Every round trip, split where the server saw it.
    var probes: [Probe] {
        lock.withLock {
            client.map { c in
                func ms(_ from: UInt64, _ to: UInt64) -> Double { Double(Int64(bitPattern: to &- from)) / 1e6 }
                var p = Probe(total: ms(c.sent, c.received))
                if let (r, s) = server[c.sent] {
                    p.toLoop = ms(c.sent, r)
                    p.inLoop = ms(r, s)
                    p.back = ms(s, c.received)
                }
                return p
            }
        }
    }
}
