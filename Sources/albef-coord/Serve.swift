import ArgumentParser
import Control
import Foundation

/// Set by SIGINT/SIGTERM; the serve loop checks it each turn.
nonisolated(unsafe) var stopSignalled: Int32 = 0

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the coordinator for one job.")

    @Option(help: "Corpus index JSON written by `albef-data index`.")
    var corpus: String
    @Option(help: "Endpoint to bind.")
    var bind = "tcp://*:5555"
    @Option(name: .customLong("state-dir"), help: "Directory for the durable state (resumed on restart).")
    var stateDir: String
    @Option(name: .customLong("world-size"), help: "Number of training ranks (0: any).")
    var worldSize: UInt32 = 0
    @Option(name: .customLong("job-id"), help: "Job identifier every message must carry.")
    var jobId = "albef"
    @Option(help: "Seed of the epoch plans.")
    var seed: UInt64 = 0
    @Option(name: .customLong("heartbeat-timeout"), help: "Seconds of silence after which a rank is presumed dead.")
    var heartbeatTimeout: Double = 30
    @Option(name: .customLong("lease-size"), help: "Samples per lease.")
    var leaseSize: UInt64 = 256
    @Option(help: "Leases kept granted per rank (prefetch depth K).")
    var prefetch: UInt32 = 4
    @Option(help: "Epochs to plan.")
    var epochs: UInt32 = 1
    @Option(help: "Job token required in every message.")
    var token: String?
    @Option(name: .customLong("curve-keys"), help: "Directory from `albef-coord keygen` (enables CURVE): server.key, server.pub, and the admitted client.pub (+ clients/*.pub).")
    var curveKeys: String?
    @Option(help: "Seconds to keep answering status after the job stopped or finished (then exit).")
    var linger: Double = 2

    func validate() throws {
        if token != nil && curveKeys != nil { throw ValidationError("use either --token or --curve-keys") }
        if leaseSize == 0 { throw ValidationError("--lease-size must be > 0") }
        if prefetch == 0 { throw ValidationError("--prefetch must be > 0") }
        if epochs == 0 { throw ValidationError("--epochs must be > 0") }
        if heartbeatTimeout <= 0 { throw ValidationError("--heartbeat-timeout must be > 0") }
        if jobId.isEmpty { throw ValidationError("--job-id must not be empty") }
        if token?.isEmpty == true { throw ValidationError("--token must not be empty") }
        if curveKeys != nil && !zmqHas("curve") { throw ValidationError("this libzmq has no CURVE support; use --token") }
    }

    func run() throws {
        do {
            let index = try CorpusIndex.load(from: URL(fileURLWithPath: corpus))
            let config = CoordinatorConfig(jobId: jobId, worldSize: worldSize, seed: seed, leaseSize: leaseSize,
                                           epochs: epochs, maxOutstanding: prefetch, heartbeatTimeout: heartbeatTimeout,
                                           authToken: token)
            let store = SnapshotStore(directory: URL(fileURLWithPath: stateDir))
            let state = try CoordinatorServer.openState(config: config, index: index, store: store) {
                FileHandle.standardError.write(Data("albef-coord: warning: \($0)\n".utf8))
            }
            var options = CoordinatorServer.Options(bind: bind)
            if let dir = curveKeys {
                let keys = try CurveKeyFiles.loadServer(from: URL(fileURLWithPath: dir))
                options.curve = keys.server
                options.allowedClients = keys.allowedClients
            }
            options.lingerAfterFinish = linger
            options.shouldStop = { stopSignalled != 0 }
            let server = try CoordinatorServer(state: state, store: store, options: options)
            signal(SIGINT) { _ in stopSignalled = 1 }
            signal(SIGTERM) { _ in stopSignalled = 1 }
            print("albef-coord: serving job \(jobId) (\(state.jobState.name), \(index.shards.count) shards, \(index.totalSamples) samples/epoch), state in \(stateDir)")
            print("albef-coord: listening \(server.endpoint)")
            fflush(stdout)
            try server.run()
            print("albef-coord: job \(jobId) \(server.state.jobState.name); exiting")
        } catch {
            throw fail(error)
        }
    }
}
