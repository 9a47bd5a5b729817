import CZMQ
import Foundation

/// The coordinator process: a ZeroMQ ROUTER loop around ``CoordinatorState``.
///
/// Each turn waits for messages (up to `pollInterval`), handles a bounded batch of frames, ticks
/// the heartbeat clock and, if a durable change happened, hands a copy of the state to the
/// snapshot writer thread (group commit). A reply leaves only once the state it depends on is on
/// disk (status and error replies, which change nothing, leave at once), so a coordinator crash
/// can never un-grant a lease a rank has seen. Undecodable, unauthenticated or misdirected
/// frames are counted and answered with an error and never change the state; frames over
/// `ZMQ_MAXMSGSIZE` (1 MiB) make libzmq drop the sender's connection.
public final class CoordinatorServer: @unchecked Sendable {
    /// Transport settings.
    public struct Options: Sendable {
        /// Endpoint to bind (`tcp://*:5555`, `tcp://127.0.0.1:*`).
        public var bind: String
        /// CURVE server keypair; nil for plain TCP (then use a job token).
        public var curve: CurveKeyPair?
        /// With CURVE: the client public keys (Z85) admitted by the ZAP handler; nil admits any
        /// client that knows the server's public key.
        public var allowedClients: [String]?
        /// Longest wait for a message before ticking the clock.
        public var pollInterval: Double = 0.05
        /// Frames handled per turn (bounds how long a status request waits behind others).
        public var maxBatch = 64
        /// Least time between two snapshot writes (bursts coalesce).
        public var minSnapshotInterval: Double = 0.05
        /// Soft changes (heartbeats, metrics) are saved at most this often.
        public var softSnapshotInterval: Double = 2
        /// Once the job is stopped or done, keep answering status this long, then return from `run`.
        public var lingerAfterFinish: Double? = nil
        /// Polled every turn; true makes `run` return (e.g. set by a signal handler).
        public var shouldStop: (@Sendable () -> Bool)? = nil
        public init(bind: String, curve: CurveKeyPair? = nil) {
            self.bind = bind
            self.curve = curve
        }
    }

    public let options: Options
    public let store: SnapshotStore?
    /// The endpoint actually bound (ephemeral ports resolved).
    public let endpoint: String
    private let context: ZMQContext
    private let socket: ZMQSocket
    /// ZeroMQ authentication (ZAP) handler socket when CURVE clients are restricted.
    private let zap: ZMQSocket?
    /// Connections refused by the ZAP handler.
    public var refusedConnections: UInt64 { lock.withLock { _refused } }
    private var _refused: UInt64 = 0
    private let lock = NSLock()
    private var _state: CoordinatorState
    private var stopRequested = false
    private var crashRequested = false
    private let writer: SnapshotWriter?
    private var submittedDurable: UInt64
    private var submittedSoft: UInt64
    private var lastSubmit: Double = 0
    /// Replies waiting until the durable version they depend on is on disk, in the order they
    /// were made (so their versions never decrease); `heldHead` is the first one not yet sent.
    private var held: [(Outgoing, UInt64)] = []
    private var heldHead = 0
    /// Frames received (for benchmarks).
    public var framesHandled: UInt64 { lock.withLock { _frames } }
    private var _frames: UInt64 = 0
    private let clock: @Sendable () -> Double

    /// A copy of the current state (thread-safe).
    public var state: CoordinatorState { lock.withLock { _state } }

    /// Binds the ROUTER socket. `state` is typically from ``openState(config:index:store:)``.
    public init(state: CoordinatorState, store: SnapshotStore?, options: Options,
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) throws {
        self.options = options
        self.store = store
        self.clock = clock
        _state = state
        submittedDurable = state.durableVersion
        submittedSoft = state.softVersion
        context = try ZMQContext()
        if options.curve != nil, options.allowedClients != nil {
            let handler = try ZMQSocket(context: context, kind: .rep)
            try handler.bind("inproc://zeromq.zap.01")
            zap = handler
        } else {
            zap = nil
        }
        socket = try ZMQSocket(context: context, kind: .router)
        try socket.setOption(ZMQ_MAXMSGSIZE, int64: Int64(Envelope.maxWireSize))
        try socket.setOption(ZMQ_ROUTER_HANDOVER, Int32(1))
        try socket.setOption(ZMQ_SNDHWM, Int32(10_000))
        try socket.setOption(ZMQ_RCVHWM, Int32(10_000))
        if let curve = options.curve { try socket.makeCurveServer(secretKey: curve.secretKey) }
        try socket.bind(options.bind)
        endpoint = try socket.lastEndpoint
        // Started last, so a failed bind leaves no thread behind.
        writer = store.map { SnapshotWriter(store: $0, savedVersion: state.durableVersion, minInterval: options.minSnapshotInterval) }
        _state.resumeAfterRestart(now: clock())
    }

    deinit { writer?.finish() }

    /// Loads the job's snapshot from `store` if there is one (checking it is the same job and corpus),
    /// else starts a new state. A resumed job keeps its saved plan settings (seed, lease size,
    /// epochs; `warnings` lists any the command line tried to change) and takes the operational
    /// ones (token, heartbeat timeout, prefetch) from `config`. A different world size starts a
    /// new attempt from the last committed checkpoint.
    public static func openState(config: CoordinatorConfig, index: CorpusIndex, store: SnapshotStore?,
                                 warnings: ((String) -> Void)? = nil) throws -> CoordinatorState {
        let fresh = CoordinatorState(config: config, index: index)
        guard let store, var saved = try store.load() else { return fresh }
        if saved.config.jobId != config.jobId {
            throw CoordinatorError.snapshotMismatch(path: store.url.path, reason: "it holds job \"\(saved.config.jobId)\", not \"\(config.jobId)\"")
        }
        if saved.corpusFingerprint != fresh.corpusFingerprint || saved.shardPaths != fresh.shardPaths {
            throw CoordinatorError.snapshotMismatch(path: store.url.path, reason: "the corpus index changed (\(saved.corpusFingerprint) -> \(fresh.corpusFingerprint))")
        }
        let differences = saved.config.planDifferences(from: config)
        if !differences.isEmpty {
            warnings?("resuming job \(config.jobId) with its saved plan settings; ignoring \(differences.joined(separator: ", ")) (saved vs given)")
        }
        saved.applyOperationalSettings(from: config)
        if saved.config.worldSize != config.worldSize {
            let from = saved.checkpoints.last.map { "checkpoint step \($0.step)" } ?? "the start"
            warnings?("world size \(saved.config.worldSize) -> \(config.worldSize): starting a new attempt from \(from)")
            saved.changeWorldSize(to: config.worldSize)
        }
        return saved
    }

    /// Applies `change` to the live state under the lock (tests and admin tools; the change is
    /// snapshotted at the next turn). Not part of the protocol.
    public func mutateState(_ change: (inout CoordinatorState) -> Void) {
        lock.withLock { change(&_state) }
    }

    /// Closes the ROUTER socket (after `run` has returned); the port is released shortly after.
    public func close() { socket.close() }

    /// Asks `run` to return after its current turn (thread-safe).
    public func stop() { lock.withLock { stopRequested = true } }

    /// Tests: makes `run` return after its current turn as if the process had been killed: no
    /// further snapshot is written and the replies waiting for one are never sent.
    func simulateCrash() { lock.withLock { stopRequested = true; crashRequested = true } }

    /// Serves until ``stop()`` (or, with `lingerAfterFinish`, until the job has finished).
    /// Returns after the last snapshot is on disk and every held reply was sent.
    public func run() throws {
        var finishedAt: Double?
        defer { writer?.finish() }
        while !lock.withLock({ stopRequested }) && options.shouldStop?() != true {
            try turn()
            if let linger = options.lingerAfterFinish {
                let st = state.jobState
                if st == .stopped || st == .done {
                    let now = clock()
                    if finishedAt == nil { finishedAt = now }
                    if let f = finishedAt, now - f >= linger { break }
                }
            }
        }
        if lock.withLock({ crashRequested }) {
            writer?.abandon()
            return
        }
        submitSnapshot(force: true)
        writer?.finish()
        if let error = writer?.error { throw error }
        releaseHeld()
    }

    /// Runs ``run()`` on a new thread (for tests and the benchmark).
    @discardableResult
    public func startInBackground() -> Thread {
        let thread = Thread { [self] in
            do { try self.run() } catch { FileHandle.standardError.write(Data("albef-coord: \(error)\n".utf8)) }
        }
        thread.stackSize = 4 << 20
        thread.start()
        return thread
    }

    /// One loop iteration: receive a bounded batch, handle it, tick, hand a snapshot to the
    /// writer, send the replies whose state is durable (status and errors need no durability).
    public func turn() throws {
        if let error = writer?.error { throw error }
        var out: [Outgoing] = []
        let timeout = heldHead == held.count ? Int(options.pollInterval * 1000) : 1
        let ready = try ZMQSocket.waitReadable(zap.map { [socket, $0] } ?? [socket], timeoutMs: timeout)
        if ready.count > 1 && ready[1] { try answerZAP() }
        if ready[0] {
            var n = 0
            while n < options.maxBatch, let frames = try socket.receive(dontWait: true) {
                n += 1
                out += handleFrames(frames)
            }
        }
        let now = clock()
        let durable: UInt64 = lock.withLock {
            out += _state.tick(now: now)
            return _state.durableVersion
        }
        submitSnapshot(force: false)
        for o in out {
            switch o.envelope.body {
            case .statusReply?, .error?: send(o)
            default:
                if writer == nil { send(o) } else { held.append((o, durable)) }
            }
        }
        releaseHeld()
    }

    /// Answers pending ZAP requests (RFC 27): admit a CURVE client whose public key is allowed.
    private func answerZAP() throws {
        guard let zap else { return }
        while let frames = try zap.receive(dontWait: true) {
            guard frames.count >= 6 else { continue }
            let mechanism = String(decoding: frames[5], as: UTF8.self)
            let key = frames.count > 6 ? z85Encode(frames[6]) : nil
            let allowed = mechanism == "CURVE" && key.map { options.allowedClients?.contains($0) ?? true } == true
            if !allowed {
                lock.withLock {
                    _refused &+= 1
                    _state.noteRefusedConnection()
                }
            }
            try zap.send([Array("1.0".utf8), frames[1], Array((allowed ? "200" : "400").utf8),
                          Array((allowed ? "OK" : "client key not admitted").utf8), [], []])
        }
    }

    private func send(_ o: Outgoing) {
        _ = try? socket.send([o.peer.id, o.envelope.encoded()], dontWait: true)
    }

    private func releaseHeld() {
        guard let writer, heldHead < held.count else { return }
        let saved = writer.savedVersion
        while heldHead < held.count && held[heldHead].1 <= saved {
            send(held[heldHead].0)
            heldHead += 1
        }
        if heldHead == held.count {
            held.removeAll(keepingCapacity: true)
            heldHead = 0
        } else if heldHead > 4096 {
            held.removeFirst(heldHead)
            heldHead = 0
        }
    }

    private func submitSnapshot(force: Bool) {
        guard let writer else { return }
        let now = clock()
        let snapshot: CoordinatorState? = lock.withLock {
            let d = _state.durableVersion, s = _state.softVersion
            let softDue = s != submittedSoft && (force || now - lastSubmit >= options.softSnapshotInterval)
            guard d != submittedDurable || softDue else { return nil }
            submittedDurable = d
            submittedSoft = s
            return _state
        }
        guard let snapshot else { return }
        lastSubmit = now
        writer.submit(snapshot, version: snapshot.durableVersion)
    }

    private func handleFrames(_ frames: [[UInt8]]) -> [Outgoing] {
        guard frames.count >= 2 else { return [] }
        let peer = Peer(frames[0])
        let payloadFrames = frames.dropFirst().filter { !$0.isEmpty }
        let decoded: Result<Envelope, Error>
        if payloadFrames.count == 1, let payload = payloadFrames.first {
            decoded = Result { try Envelope(decoding: payload) }
        } else {
            decoded = .failure(CodecError.malformed(byteCount: frames.dropFirst().reduce(0) { $0 + $1.count }))
        }
        let now = clock()
        return lock.withLock {
            _frames &+= 1
            switch decoded {
            case .success(let env): return _state.handle(env, from: peer, now: now)
            case .failure(let error):
                let reason = payloadFrames.count == 1 ? "\(error)" : "expected one non-empty payload frame, got \(frames.count - 1) frames"
                return _state.handleUndecodable(from: peer, reason: reason)
            }
        }
    }
}
