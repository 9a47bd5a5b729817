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
    @Option(name: .customLong("state-dir"), help: "Snapshot directory (default: a temp dir).")
    var stateDir: String?

    func run() throws {
        let dir = stateDir.map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("albef-coord-bench-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        let index = CorpusIndex(root: "/bench", shards: (0..<1000).map { CorpusIndex.Shard(path: String(format: "%05d.tar", $0), samples: 10_000) })
        let config = CoordinatorConfig(jobId: "bench", worldSize: UInt32(ranks), leaseSize: 256, epochs: 1,
                                       maxOutstanding: 4, heartbeatTimeout: 60, authToken: "t")
        let server = try CoordinatorServer(state: CoordinatorState(config: config, index: index),
                                           store: SnapshotStore(directory: dir),
                                           options: .init(bind: "tcp://127.0.0.1:*"))
        server.startInBackground()
        defer { server.stop(); try? FileManager.default.removeItem(at: dir) }

        let context = try ZMQContext()
        var sockets: [ZMQSocket] = []
        for _ in 0..<ranks {
            let s = try ZMQSocket(context: context, kind: .dealer)
            try s.connect(server.endpoint)
            sockets.append(s)
        }
        var seqs = [UInt64](repeating: 0, count: ranks)
        var held = [[Lease]](repeating: [], count: ranks)
        func send(_ r: Int, _ body: Body) throws {
            seqs[r] += 1
            let env = Envelope(jobId: "bench", authToken: "t", seq: seqs[r], rank: Int32(r), body: body)
            try sockets[r].send([env.encoded()], dontWait: true)
        }
        func drain() throws {
            for r in 0..<ranks {
                while let frames = try sockets[r].receive(dontWait: true), let payload = frames.last {
                    if case .leaseGrant(let g)? = try Envelope(decoding: payload).body { held[r] = g.leases }
                }
            }
        }
        for r in 0..<ranks { try send(r, .registration(Registration(worldSize: UInt32(ranks), host: "bench", pid: UInt32(r), buildVersion: "bench"))) }
        Thread.sleep(forTimeInterval: 0.3)
        try drain()

        // Status latency probe on its own thread.
        let latencies = LatencyBox()
        let probe = Thread {
            let requester = ControlRequester(endpoint: server.endpoint, auth: .token("t"), jobId: "bench", timeout: 3)
            let probeContext = try? ZMQContext()
            while !latencies.done {
                let t0 = DispatchTime.now().uptimeNanoseconds
                if (try? requester.request(.statusRequest, context: probeContext)) != nil {
                    latencies.add(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                }
                Thread.sleep(forTimeInterval: 0.01)
            }
        }
        probe.start()

        let start = Date()
        let framesBefore = server.framesHandled
        var round: UInt64 = 0
        while Date().timeIntervalSince(start) < seconds {
            round += 1
            for r in 0..<ranks {
                try send(r, .heartbeat(Heartbeat(step: round, stepSeconds: 0.1)))
                if round % 4 == UInt64(r % 4) {
                    if let lease = held[r].first {
                        try send(r, .leaseReturn(LeaseReturn(leaseId: lease.id, consumed: lease.count)))
                        held[r].removeFirst()
                    } else {
                        try send(r, .leaseRequest(LeaseRequest(want: 4)))
                    }
                }
            }
            try drain()
            Thread.sleep(forTimeInterval: 0.002)
        }
        let elapsed = Date().timeIntervalSince(start)
        let frames = server.framesHandled - framesBefore
        latencies.done = true
        while !probe.isFinished { usleep(1000) }
        let sorted = latencies.values.sorted()
        func pct(_ p: Double) -> Double { sorted.isEmpty ? -1 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let msgs = Double(frames) / elapsed
        print(String(format: "bench: %d ranks, %.1f s, %llu frames handled, %d status probes", ranks, elapsed, frames, sorted.count))
        print(String(format: "coord: msgs_s=%.0f status_p50_ms=%.2f status_p99_ms=%.2f", msgs, pct(0.5), pct(0.99)))
    }
}

/// Latencies collected by the probe thread.
final class LatencyBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _values: [Double] = []
    private var _done = false
    var done: Bool {
        get { lock.withLock { _done } }
        set { lock.withLock { _done = newValue } }
    }
    var values: [Double] { lock.withLock { _values } }
    func add(_ v: Double) { lock.withLock { _values.append(v) } }
}
